//! Prints the layout table of a policy file (what `cargo xtask policy check`
//! shows): `cargo run -p nexus-policy --features std --example policy-table -- FILE`.

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: policy-table FILE.toml");
        std::process::exit(2);
    };
    match nexus_policy::load_file(&path) {
        Ok(policy) => print!("{}", policy.table()),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
