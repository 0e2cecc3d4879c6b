//! Emulated VMs (filled in by the VM-emulator work).
