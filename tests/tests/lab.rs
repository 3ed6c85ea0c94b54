//! The lab library itself: what a killed run leaves is found and removed.
use std::{fs, path::Path, process::Command};

use anyhow::{Result, ensure};
use greha_tests::{Lab, leftover_labs, run};

#[test]
fn a_lab_whose_process_was_killed_is_found_and_removed() -> Result<()> {
    // A process that is gone, as a test run killed by SIGKILL would be.
    let mut child = Command::new("sleep").arg("60").spawn()?;
    let pid = child.id();
    child.kill()?;
    child.wait()?;
    let id = format!("gh{pid:x}x0");
    let netns = format!("{id}-a");
    let pins = Path::new("/sys/fs/bpf").join(format!("greha-test-{id}-a"));
    run(Command::new("ip").args(["netns", "add", &netns]))?;
    fs::create_dir_all(&pins)?;
    let checked = find_and_remove(&id, &netns, &pins);
    // Whatever the checks said, the fake lab goes.
    let _ = Command::new("ip").args(["netns", "del", &netns]).output();
    let _ = fs::remove_dir(&pins);
    checked
}

fn find_and_remove(id: &str, netns: &str, pins: &Path) -> Result<()> {
    let found: Vec<_> = leftover_labs()?
        .into_iter()
        .filter(|l| l.id == id)
        .collect();
    ensure!(found.len() == 1, "{found:?}");
    ensure!(found[0].namespaces == [netns], "{found:?}");
    ensure!(found[0].pin_dirs == [pins], "{found:?}");
    // The labs of live processes (this one's) are never listed.
    let mut live = Lab::new()?;
    live.host("a")?;
    ensure!(
        !leftover_labs()?.iter().any(|l| l.id == live.id()),
        "a live lab listed as left over"
    );

    for lab in found {
        lab.remove()?;
    }
    let listed = run(Command::new("ip").args(["netns", "list"]))?;
    ensure!(!listed.contains(netns), "{netns} still there: {listed}");
    ensure!(!pins.exists(), "{} still there", pins.display());
    Ok(())
}
