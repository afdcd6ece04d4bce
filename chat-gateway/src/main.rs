use chat_gateway::settings::Settings;
use chat_gateway::startup::Application;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::telemetry::init("chat-gateway");
    let settings = Settings::load()?;
    Application::build(settings)
        .await?
        .run_until_stopped()
        .await
}
