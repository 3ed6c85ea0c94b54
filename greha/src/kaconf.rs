//! keepalived.conf's text as keepalived reads it before any keyword means
//! anything (keepalived.conf(5), "ADVANCED CONFIGURATION"): `include`
//! files (wildcards in the file name, relative to the including file),
//! conditional lines (`@ID line` when the config-id is ID, `@^ID line`
//! when it is not), and parameters (`$NAME=VALUE`, multiline with `\`,
//! replaced in later lines as `$NAME` before a blank or `${NAME}`,
//! recursively, at replacement time). The result is the lines keepalived
//! would parse, each with where it came from.
use std::{
    collections::HashMap,
    fmt,
    path::{Path, PathBuf},
};

/// Where a line came from: a line of the main file, or of an included one.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Origin {
    /// None for the main file.
    pub file: Option<PathBuf>,
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            None => write!(f, "{}", self.line),
            Some(p) => write!(f, "{}:{}", p.display(), self.line),
        }
    }
}

/// One line to parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub origin: Origin,
    pub text: String,
}

/// How deep includes and parameter expansions nest: keepalived's own
/// files never come near it; a file including itself must end.
const MAX_NESTING: usize = 8;
/// How many replacements one line may take (recursive parameters).
const MAX_REPLACEMENTS: usize = 64;

struct Reader<'a> {
    config_id: &'a str,
    read: &'a dyn Fn(&Path) -> std::io::Result<String>,
    params: HashMap<String, String>,
    out: Vec<Line>,
    notes: Vec<(Origin, String)>,
}

/// The lines of `text` (the main file, in `dir`) as keepalived would parse
/// them for `config_id`, and what could not be read (with where).
pub fn read(
    text: &str,
    dir: Option<&Path>,
    config_id: &str,
    read: &dyn Fn(&Path) -> std::io::Result<String>,
) -> (Vec<Line>, Vec<(Origin, String)>) {
    let mut r = Reader {
        config_id,
        read,
        params: HashMap::new(),
        out: Vec::new(),
        notes: Vec::new(),
    };
    r.file(text, None, dir, 0);
    (r.out, r.notes)
}

impl Reader<'_> {
    fn file(&mut self, text: &str, file: Option<&Path>, dir: Option<&Path>, depth: usize) {
        let mut lines = text.lines().enumerate().peekable();
        while let Some((i, raw)) = lines.next() {
            let origin = Origin {
                file: file.map(Path::to_owned),
                line: i + 1,
            };
            // A multiline definition: `$NAME=` then lines ending in `\`.
            let mut raw = raw.to_owned();
            if let Some((name, value)) = definition(&raw)
                && value.trim_end().ends_with('\\')
            {
                let mut body = vec![value.trim_end().trim_end_matches('\\').to_owned()];
                let mut last = false;
                while !last && let Some((_, next)) = lines.next() {
                    last = !next.trim_end().ends_with('\\');
                    body.push(next.trim_end().trim_end_matches('\\').to_owned());
                }
                let body: Vec<String> = body.into_iter().filter(|l| !l.trim().is_empty()).collect();
                raw = format!("${name}={}", body.join("\n"));
            }
            self.line(&raw, &origin, dir, depth);
        }
    }

    fn line(&mut self, raw: &str, origin: &Origin, dir: Option<&Path>, depth: usize) {
        if depth > MAX_NESTING {
            self.notes.push((
                origin.clone(),
                format!("includes or parameters nested deeper than {MAX_NESTING}: not read"),
            ));
            return;
        }
        let Some(text) = self.conditional(raw) else {
            return;
        };
        if let Some((name, value)) = definition(&text) {
            self.params.insert(name.to_owned(), value.to_owned());
            return;
        }
        let text = self.replace(&text, origin);
        if text.contains('\n') {
            // A multiline parameter: its lines, each read as a line here.
            for l in text.lines() {
                self.line(l, origin, dir, depth + 1);
            }
            return;
        }
        let mut words = text.split_whitespace();
        if let Some(
            kw @ ("include" | "includer" | "includem" | "includew" | "includeb" | "includea"),
        ) = words.next()
        {
            let Some(pattern) = words.next() else {
                self.notes
                    .push((origin.clone(), format!("{kw}: no file named")));
                return;
            };
            self.include(kw, pattern, origin, dir, depth);
            return;
        }
        self.out.push(Line {
            origin: origin.clone(),
            text,
        });
    }

    /// The line without its `@ID`/`@^ID` prefix, if it applies here.
    fn conditional(&self, raw: &str) -> Option<String> {
        let t = raw.trim_start();
        let Some(rest) = t.strip_prefix('@') else {
            return Some(raw.to_owned());
        };
        let (id, line) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        let applies = match id.strip_prefix('^') {
            Some(not) => not != self.config_id,
            None => id == self.config_id,
        };
        applies.then(|| line.to_owned())
    }

    /// `$NAME` before a blank or the end, and `${NAME}` anywhere, replaced
    /// by their values, again in what replaced them; undefined ones stay.
    fn replace(&mut self, text: &str, origin: &Origin) -> String {
        let mut s = text.to_owned();
        for _ in 0..MAX_REPLACEMENTS {
            let Some((start, end, value)) = self.first_param(&s) else {
                return s;
            };
            s.replace_range(start..end, &value);
        }
        self.notes.push((
            origin.clone(),
            format!("parameters replaced more than {MAX_REPLACEMENTS} times: left as they are"),
        ));
        s
    }

    /// The first defined parameter reference in `s`: its byte range and
    /// value.
    fn first_param(&self, s: &str) -> Option<(usize, usize, String)> {
        let bytes = s.as_bytes();
        let mut i = 0;
        while let Some(off) = s[i..].find('$') {
            let at = i + off;
            let (name, end) = if bytes.get(at + 1) == Some(&b'{') {
                match s[at + 2..].find('}') {
                    Some(close) => (&s[at + 2..at + 2 + close], at + 3 + close),
                    None => ("", at + 1),
                }
            } else {
                let len = s[at + 1..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(s.len() - at - 1);
                let end = at + 1 + len;
                // Bare, it must end the word.
                let ends = s[end..].chars().next().is_none_or(char::is_whitespace);
                (if ends { &s[at + 1..end] } else { "" }, end)
            };
            if let Some(v) = self.params.get(name) {
                return Some((at, end, v.clone()));
            }
            i = at + 1;
        }
        None
    }

    fn include(
        &mut self,
        kw: &str,
        pattern: &str,
        origin: &Origin,
        dir: Option<&Path>,
        depth: usize,
    ) {
        let path = match dir {
            Some(d) if !Path::new(pattern).is_absolute() => d.join(pattern),
            _ => PathBuf::from(pattern),
        };
        let files = match expand(&path) {
            Ok(f) => f,
            Err(why) => {
                self.notes
                    .push((origin.clone(), format!("{kw} {pattern}: {why}")));
                return;
            }
        };
        if files.is_empty() && kw != "includer" {
            self.notes
                .push((origin.clone(), format!("{kw} {pattern}: no file matches")));
        }
        for f in files {
            match (self.read)(&f) {
                Ok(text) => {
                    let dir = f.parent().map(Path::to_owned);
                    self.file(&text, Some(&f), dir.as_deref(), depth + 1);
                }
                Err(e) => self
                    .notes
                    .push((origin.clone(), format!("{kw} {}: {e}", f.display()))),
            }
        }
    }
}

/// `$NAME=VALUE` (no blank before `=`, only blanks before `$`): the name
/// and the value.
fn definition(line: &str) -> Option<(&str, &str)> {
    let def = line.trim_start().strip_prefix('$')?;
    let (name, value) = def.split_once('=')?;
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then_some((name, value))
}

/// The files a path names, with `*` and `?` in its last part (sorted, as
/// glob(3) returns them); a path without them names itself.
fn expand(path: &Path) -> Result<Vec<PathBuf>, String> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("not a file name")?;
    if !name.contains(['*', '?']) {
        return Ok(vec![path.to_owned()]);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    if dir.to_str().is_some_and(|d| d.contains(['*', '?'])) {
        return Err("wildcards only in the file name".into());
    }
    let mut out: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_str().is_some_and(|n| matches(name, n)))
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e.to_string()),
    };
    out.sort();
    Ok(out)
}

/// glob(3)'s `*` and `?` (a leading `.` only matched by itself).
fn matches(pattern: &str, name: &str) -> bool {
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(lines: &[Line]) -> Vec<String> {
        lines.iter().map(|l| l.text.trim().to_owned()).collect()
    }

    fn no_files(_: &Path) -> std::io::Result<String> {
        Err(std::io::ErrorKind::NotFound.into())
    }

    /// keepalived.conf(5)'s own examples.
    #[test]
    fn conditionals_and_parameters_as_the_manual_shows() {
        let text = "@main router_id main_router\n\
                    @backup router_id backup_router\n\
                    @^main 1.2.3.4\n\
                    @^backup 1.2.3.5\n\
                    $ADDRESS_BASE=10.2.${ADDRESS_BASE_SUB}\n\
                    $ADDRESS_BASE_SUB=0\n\
                    ${ADDRESS_BASE}.100/32\n\
                    $ADDRESS_BASE_SUB=10\n\
                    ${ADDRESS_BASE}.100/32\n\
                    @main $PRIORITY=240\n\
                    @backup $PRIORITY=200\n\
                    priority $PRIORITY\n\
                    script \"$UNDEFINED stays\"\n";
        let (lines, notes) = read(text, None, "main", &no_files);
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(
            texts(&lines),
            vec![
                "router_id main_router",
                "1.2.3.5",
                "10.2.0.100/32",
                "10.2.10.100/32",
                "priority 240",
                "script \"$UNDEFINED stays\"",
            ]
        );
        assert_eq!(lines[1].origin.line, 4);
    }

    #[test]
    fn multiline_parameters_expand_with_their_conditionals() {
        let text = "$INSTANCE= \\\n\
                    vrrp_instance VI_${NUM} { \\\n\
                    @high priority 130 \\\n\
                    @low priority 120 \\\n\
                    }\n\
                    $NUM=0\n\
                    $INSTANCE\n\
                    $NUM=1\n\
                    $INSTANCE\n";
        let (lines, notes) = read(text, None, "low", &no_files);
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(
            texts(&lines),
            vec![
                "vrrp_instance VI_0 {",
                "priority 120",
                "}",
                "vrrp_instance VI_1 {",
                "priority 120",
                "}",
            ]
        );
        // Each expanded line is where its use was.
        assert_eq!(lines[3].origin.line, 9);
    }

    #[test]
    fn includes_with_wildcards_relative_to_the_including_file() {
        let dir = std::env::temp_dir().join(format!("greha-kaconf-{}", std::process::id()));
        let sub = dir.join("conf.d");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join("b.conf"), "second\ninclude ../leaf.inc\n").unwrap();
        std::fs::write(sub.join("a.conf"), "first\n").unwrap();
        std::fs::write(sub.join(".hidden.conf"), "hidden\n").unwrap();
        std::fs::write(dir.join("leaf.inc"), "leaf\ninclude leaf.inc\n").unwrap();
        let read_file = |p: &Path| std::fs::read_to_string(p);
        let (lines, notes) = read(
            "top\ninclude conf.d/*.conf\ninclude missing/*.conf\nbottom\n",
            Some(&dir),
            "x",
            &read_file,
        );
        let got = texts(&lines);
        // The leaf includes itself: read until the nesting bound, said.
        assert_eq!(&got[..4], &["top", "first", "second", "leaf"]);
        assert_eq!(got.last().map(String::as_str), Some("bottom"));
        assert!(!got.contains(&"hidden".to_owned()));
        assert_eq!(
            lines[2].origin.file.as_deref(),
            Some(sub.join("b.conf").as_path())
        );
        assert_eq!(
            lines[2].origin.to_string(),
            format!("{}:1", sub.join("b.conf").display())
        );
        let notes: Vec<String> = notes.iter().map(|(o, m)| format!("{o}: {m}")).collect();
        assert!(
            notes
                .iter()
                .any(|n| n.starts_with("3: include missing/*.conf: no file matches")),
            "{notes:?}"
        );
        assert!(
            notes.iter().any(|n| n.contains("nested deeper than")),
            "{notes:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn glob_as_glob3() {
        for (p, n, want) in [
            ("*.conf", "a.conf", true),
            ("*.conf", "a.conf.bak", false),
            ("?.conf", "ab.conf", false),
            ("*", ".hidden", false),
            (".*", ".hidden", true),
            ("a*b*c", "axxbyyc", true),
        ] {
            assert_eq!(matches(p, n), want, "{p} {n}");
        }
    }
}
