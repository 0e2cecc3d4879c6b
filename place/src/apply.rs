//! Carrying a plan out (`--apply`): one RelocateVM_Task at a time, each
//! waited for; the first failure stops the run with what was and was not
//! moved.

use crate::cluster::Cluster;
use crate::plan::{Move, Problem};
use crate::run::Failure;
use dwepc_core::vsphere::client::Client;
use dwepc_core::vsphere::xml::TaskState;
use std::time::{Duration, Instant};

/// Carries the moves out in order, one task at a time.
pub fn apply(
    c: &mut Client,
    p: &Problem,
    cl: &Cluster,
    moves: &[Move],
    task_timeout: Duration,
) -> Result<(), Failure> {
    let name = |m: &Move| format!("{} -> {}", p.vms[m.vm].name, p.hosts[m.to].name);
    for (i, m) in moves.iter().enumerate() {
        let (vm, to) = (&p.vms[m.vm].name, &p.hosts[m.to].name);
        if let Err(e) = migrate(c, &cl.vms[m.vm].moref, &cl.hosts[m.to].moref, task_timeout) {
            let done: Vec<String> = moves[..i].iter().map(name).collect();
            let rest: Vec<String> = moves[i + 1..].iter().map(name).collect();
            return Err(Failure::Apply(format!(
                "migration of {vm} to {to} failed: {e}. Moved: {}. Not attempted: {}.",
                list_or_none(&done),
                list_or_none(&rest)
            )));
        }
        println!("moved {vm} to {to} ({}/{})", i + 1, moves.len());
    }
    println!("applied: {} migration(s)", moves.len());
    Ok(())
}

/// Migrates VM `vm` to host `host` (morefs) and waits for the task, at
/// most `timeout`.
fn migrate(c: &mut Client, vm: &str, host: &str, timeout: Duration) -> Result<(), String> {
    let task = c.relocate(vm, host).map_err(|e| e.to_string())?;
    let t = Instant::now();
    loop {
        match c.task_state(&task).map_err(|e| e.to_string())? {
            TaskState::Success => return Ok(()),
            TaskState::Error(e) => return Err(e),
            TaskState::Queued | TaskState::Running => {}
        }
        if t.elapsed() > timeout {
            return Err(format!(
                "still running after {} s (the task goes on in vCenter)",
                timeout.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `items` joined by ", ", or "none".
fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}
