//! Script and notify command lines, split into a program and its arguments
//! as keepalived.conf(5) writes them (`script "killall -0 haproxy"`,
//! `notify_master "/usr/local/bin/vrrp.sh MASTER VI_1"`): words separated
//! by blanks, single or double quotes around a word with blanks, a
//! backslash taking the next character as it is. No shell is involved
//! unless the line names one (`/bin/sh -c '…'`), so nothing in a VRRP
//! event can inject a command.

/// The program and its arguments of `line`.
pub fn split(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    // A word has begun (possibly empty, as in '').
    let mut started = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            // In double quotes a backslash escapes the quote and itself
            // only; in single quotes nothing is special.
            (Some('"'), '\\') => match chars.next() {
                Some(n @ ('"' | '\\')) => cur.push(n),
                Some(n) => {
                    cur.push('\\');
                    cur.push(n);
                }
                None => return Err("ends in a backslash".into()),
            },
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                started = true;
            }
            (None, '\\') => {
                cur.push(chars.next().ok_or("ends in a backslash")?);
                started = true;
            }
            (None, c) if c.is_whitespace() => {
                if started {
                    words.push(std::mem::take(&mut cur));
                    started = false;
                }
            }
            (None, c) => {
                cur.push(c);
                started = true;
            }
        }
    }
    if let Some(q) = quote {
        return Err(format!("a {q} quote is not closed"));
    }
    if started {
        words.push(cur);
    }
    if words.is_empty() {
        return Err("no program given".into());
    }
    Ok(words)
}

/// `args` as one line that [`split`] gives back: what the import writes
/// for keepalived's unquoted multi-word notify lines.
pub fn join(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if !a.is_empty() && !a.contains(|c: char| c.is_whitespace() || "'\"\\".contains(c)) {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r#"'"'"'"#))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalived_command_lines() {
        let table: &[(&str, Result<&[&str], &str>)] = &[
            ("/usr/local/bin/check", Ok(&["/usr/local/bin/check"])),
            ("killall -0 haproxy", Ok(&["killall", "-0", "haproxy"])),
            ("  /x   a\tb  ", Ok(&["/x", "a", "b"])),
            (
                "/usr/local/bin/vrrp.sh MASTER VI_1",
                Ok(&["/usr/local/bin/vrrp.sh", "MASTER", "VI_1"]),
            ),
            (
                "/bin/sh -c 'pidof nginx || exit 1'",
                Ok(&["/bin/sh", "-c", "pidof nginx || exit 1"]),
            ),
            (r#"/x "a \"b\" c" ''"#, Ok(&["/x", r#"a "b" c"#, ""])),
            (r"/x a\ b 'c\d'", Ok(&["/x", "a b", r"c\d"])),
            // Shell syntax is just text: no shell runs it.
            ("/x; rm -rf /", Ok(&["/x;", "rm", "-rf", "/"])),
            ("/x 'open", Err("a ' quote is not closed")),
            ("/x \\", Err("ends in a backslash")),
            ("   ", Err("no program given")),
        ];
        for (line, want) in table {
            let got = split(line);
            match want {
                Ok(w) => assert_eq!(
                    got.as_deref(),
                    Ok(&w.iter().map(|s| s.to_string()).collect::<Vec<_>>()[..]),
                    "{line}"
                ),
                Err(e) => assert_eq!(got, Err((*e).to_owned()), "{line}"),
            }
        }
    }

    #[test]
    fn join_gives_back_the_words() {
        for words in [
            vec!["/x", "a b", "it's", "", r#"q"\"#],
            vec!["/usr/bin/notify", "MASTER"],
        ] {
            let words: Vec<String> = words.into_iter().map(String::from).collect();
            assert_eq!(split(&join(&words)), Ok(words.clone()), "{}", join(&words));
        }
    }
}
