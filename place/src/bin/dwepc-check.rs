//! dwepc-check: the pre-flight check of vSphere for the nginx module (the
//! work is in `dwepc_place::check`). Exit status: see `--help`.

use clap::Parser;
use dwepc_place::check::{run, CheckArgs};

fn main() {
    let args = CheckArgs::parse();
    std::process::exit(run(&args) as i32);
}
