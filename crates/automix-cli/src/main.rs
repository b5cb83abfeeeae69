//! The `automix` command. Its subcommands (train, eval, route, collect, serve) arrive
//! with the runtime (issue #5); until then it reports that and exits non-zero.

fn main() {
    eprintln!(
        "automix {}: subcommands are not built yet (see issue #5)",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
