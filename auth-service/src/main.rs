use auth_service::settings::Settings;
use auth_service::startup::Application;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    common::telemetry::init("auth-service");
    let settings = Settings::load()?;
    Application::build(settings)
        .await?
        .run_until_stopped()
        .await?;
    Ok(())
}
