//! The `dkms-trigger` binary: a shim over the library's command line.

fn main() {
    std::process::exit(dkms_trigger::cli::main_with_args(std::env::args_os()));
}
