//! Where the lab's files are, and its own binary (for the VM and load
//! processes of a cell).

use std::path::{Path, PathBuf};

/// The repository's root (lab files are found from here).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The lab's default cluster file.
pub fn default_cluster() -> PathBuf {
    repo_root().join("lab/clusters/five.json")
}

/// The dwepc-lab binary (this process, or the one cargo built next to a
/// test binary), for the VM and load processes of a cell.
pub fn lab_binary() -> PathBuf {
    if let Ok(p) = std::env::var("DWEPC_LAB_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    if exe.file_name().is_some_and(|n| n == "dwepc-lab") {
        return exe;
    }
    // target/<profile>/deps/<test> -> target/<profile>/dwepc-lab
    exe.ancestors()
        .skip(1)
        .map(|d| d.join("dwepc-lab"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("dwepc-lab"))
}
