use history_service::settings::Settings;
use history_service::startup::Application;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    common::telemetry::init("history-service");
    let settings = Settings::load()?;
    Application::build(settings)
        .await?
        .run_until_stopped()
        .await
}
