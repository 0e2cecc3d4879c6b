//! dwepc-place: where the VMs of a vSphere cluster should run so that one
//! resource (disk I/O by default) is balanced over the ESXi hosts. The
//! work is in the library (`dwepc_place`); this is its command.
//!
//! Exit status: 0 a plan was made (and applied with `--apply`), or nothing
//! needs to move; 1 no plan (bad input, vCenter unreachable, no samples);
//! 2 bad command line; 3 `--apply` stopped at a failed migration, or
//! could not start because the plan's moves cannot be made one at a time.

use clap::Parser;
use dwepc_place::cli::Args;

fn main() {
    let args = Args::parse();
    if let Err(f) = dwepc_place::run(&args) {
        eprintln!("dwepc-place: {}", f.message());
        std::process::exit(f.exit_code());
    }
}
