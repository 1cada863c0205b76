//! The public listener: subsystems' public routers (Loop rooms, inbound hooks, TURN REST credentials).

use axum::Router;

use crate::config::HttpConfig;
use crate::subsystems::Started;

/// The public application: every enabled subsystem's public routes, then the common stack.
pub(crate) fn router(started: &[Started], http: &HttpConfig) -> Router {
    let mut app = Router::new();
    for s in started {
        if let Some(r) = &s.public {
            app = app.merge(r.clone());
        }
    }
    super::finish(app, "public", http)
}
