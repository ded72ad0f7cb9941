//! What the live protocol reads from licensd's model (the issue-16 surface: the app's WebSocket
//! key, version and live-session quota; per-variable access; license levels and seats), in one
//! place so the packets do not depend on where each field lives.

use licensd_domain::app::{App, AppEvent, VariableAccess};
use licensd_domain::license::License;
use licensd_projections::HotModel;

/// The app whose WebSocket API key this is (constant-time confirmed by the model).
pub fn app_by_websocket_key(hot: &HotModel, presented: &str) -> Option<App> {
    hot.app_by_websocket_key(presented).map(|app| App::clone(&app))
}

pub fn app_version(app: &App) -> &str {
    &app.version
}

/// Authorized live sessions the app may have at once (status 602); `None` = no limit.
pub fn live_session_quota(app: &App) -> Option<u32> {
    app.settings.live_session_quota
}

/// A variable read needs an authorized session unless the merchant marked it otherwise.
pub fn variable_requires_auth(app: &App, name: &str) -> bool {
    app.variable_access(name) == VariableAccess::AuthRequired
}

pub fn levels(license: &License) -> &[String] {
    &license.extras.levels
}

/// Live authorized sessions the license allows at once (floating seats); `None` = unlimited.
pub fn max_sessions(license: &License) -> Option<u32> {
    license.extras.max_sessions
}

/// The new version when `event` changed the app's version (event 102).
pub fn version_change(event: &AppEvent) -> Option<&str> {
    match event {
        AppEvent::AppVersionChanged { version, .. } => Some(version),
        _ => None,
    }
}
