//! `dwepc-lab`: the lab's command line.
//!
//!     dwepc-lab vms --spec FILE --control ADDR [--ready FILE]   emulated VMs
//!     dwepc-lab run [...]                                         a lab run

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("vms") => dwepc_lab::vm::main(&args[1..]),
        _ => {
            eprintln!("usage: dwepc-lab vms --spec FILE --control ADDR [--ready FILE]");
            2
        }
    };
    std::process::exit(code);
}
