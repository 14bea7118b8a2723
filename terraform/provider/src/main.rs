//! `terraform-provider-fedbroker`: started by Terraform, never by hand.

fn main() -> std::process::ExitCode {
    if std::env::args().nth(1).as_deref() == Some("--version") {
        println!("terraform-provider-fedbroker {}", env!("CARGO_PKG_VERSION"));
        return std::process::ExitCode::SUCCESS;
    }
    if std::env::var_os("TF_PLUGIN_MAGIC_COOKIE").is_none() {
        eprintln!(
            "terraform-provider-fedbroker is a Terraform plugin: Terraform starts it. \
             Install it as the provider fedbroker/fedbroker (see terraform/README.md)."
        );
        std::process::exit(1);
    }
    // An error is printed with its causes (`{:#}`), never with the backtrace that
    // anyhow captures when RUST_BACKTRACE is set in Terraform's environment.
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("terraform-provider-fedbroker: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(tf_provider::serve(
        "fedbroker",
        terraform_provider_fedbroker::FedbrokerProvider::default(),
    ))
}
