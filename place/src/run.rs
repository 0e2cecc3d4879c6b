//! One run of `dwepc-place`, from the command line to the exit status:
//! settings, vSphere, the plan, the report, and with `--apply` the
//! migrations.

use crate::advice::advise;
use crate::apply::apply;
use crate::cli::{settings, Args, Settings};
use crate::cluster::{client, read_cluster};
use crate::problem::problem;
use crate::report::Report;
use dwepc_core::vsphere::client::Client;
use dwepc_core::vsphere::Api;
use dwepc_core::vsphere::Error as VsError;

/// Why no plan (exit 1), a value of the command line refused (exit 2,
/// as clap's own refusals), or why --apply stopped (exit 3).
#[derive(Debug)]
pub enum Failure {
    Input(String),
    Usage(String),
    Apply(String),
}

impl Failure {
    /// What to tell the user.
    pub fn message(&self) -> &str {
        match self {
            Failure::Input(m) | Failure::Usage(m) | Failure::Apply(m) => m,
        }
    }

    /// The exit status: 1 no plan, 2 a bad command-line value, 3
    /// `--apply` stopped.
    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Input(_) => 1,
            Failure::Usage(_) => 2,
            Failure::Apply(_) => 3,
        }
    }
}

impl From<VsError> for Failure {
    fn from(e: VsError) -> Self {
        Failure::Input(format!("vSphere: {e}"))
    }
}

/// A checked input's error as a [`Failure::Input`].
pub(crate) fn input<T, E: std::fmt::Display>(r: Result<T, E>) -> Result<T, Failure> {
    r.map_err(|e| Failure::Input(e.to_string()))
}

/// Reads the cluster, prints the plan and with `--apply` carries it out;
/// logs out of vSphere in any case.
pub fn run(a: &Args) -> Result<(), Failure> {
    // checked before vSphere is asked anything: a bad value is a bad
    // command line (exit 2), as the values clap itself refuses
    let s = settings(a).map_err(Failure::Usage)?;
    let mut client = client(a)?;
    let result = plan_and_apply(a, &s, &mut client);
    client.logout();
    result
}

fn plan_and_apply(a: &Args, s: &Settings, client: &mut Client) -> Result<(), Failure> {
    let cl = read_cluster(client, a, s)?;
    let p = input(problem(a, s, &cl))?;
    let adv = advise(&p, a.tolerance, s.time_limit);
    let report = Report::new(a, s, &p, &adv);
    report.print(a.json, p.vms.len());
    if !a.apply || adv.plan.moves.is_empty() {
        return Ok(());
    }
    apply(client, &p, &cl, &adv.plan.moves, s.task_timeout)
}
