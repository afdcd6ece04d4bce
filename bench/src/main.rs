use chat_bench::cli::{Cli, Command};
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(args) => {
            let outcome = chat_bench::run(&args).await?;
            // The closing line says whether every scenario produced numbers, not how good
            // they are.
            println!(
                "scenarios: {} passed, {} failed",
                outcome.passed, outcome.failed
            );
            if outcome.failed > 0 {
                std::process::exit(1);
            }
        }
        Command::DropDatabases { mongo, names } => {
            chat_bench::drop_databases(&mongo, &names).await?;
        }
    }
    Ok(())
}
