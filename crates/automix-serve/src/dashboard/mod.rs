//! `GET /dashboard`: one self-contained page (its script, styles and charts are in this
//! binary; the page loads nothing from elsewhere, and its Content-Security-Policy says so)
//! that shows what the router did since start and over the last minutes. The page carries
//! its first data inline and refreshes from `GET /dashboard/data`.
//!
//! Access: open when client auth is off (as `/metrics` is). With client keys configured it
//! takes an admin key, as a bearer token or through `POST /dashboard/login`, which sets an
//! HttpOnly session cookie holding a random token (never the key).

mod sessions;
pub(crate) mod stats;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use automix::belief_store::BeliefSnapshot;
use automix::strategy::PolicyView;

use crate::{ApiError, ProxyState};
pub(crate) use sessions::Sessions;
use stats::{DashboardStats, Period};

/// The page; `__AUTOMIX_DASHBOARD_DATA__` is replaced by the first snapshot.
const PAGE: &str = include_str!("page.html");

/// The login form shown instead of the page when a key is needed.
const LOGIN: &str = include_str!("login.html");

/// Nothing from elsewhere: scripts and styles inline, data from this origin only.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src data:; form-action 'self'; frame-ancestors 'none'";

/// What `/dashboard/data` returns.
#[derive(Debug, Serialize)]
pub(crate) struct DashboardData<'a> {
    uptime_secs: u64,
    window_secs: u64,
    ring_capacity: usize,
    score_bins: usize,
    models: Vec<ModelInfo>,
    policy: PolicyView,
    since_start: &'a Period,
    recent: Period,
    belief: Option<BeliefSnapshot>,
}

/// A served model and its llm_data prices (money per million tokens).
#[derive(Debug, Serialize)]
struct ModelInfo {
    name: String,
    input_price: f64,
    output_price: f64,
}

/// Who may see the dashboard.
enum Access {
    Granted,
    /// Auth is on and no admin key came: the login form.
    Login,
    /// Auth is on but no admin key is configured: nobody may.
    Disabled,
}

fn access(state: &ProxyState, headers: &HeaderMap) -> Access {
    if state.settings.client_keys.is_empty() {
        return Access::Granted;
    }
    if state.settings.admin_keys.is_empty() {
        return Access::Disabled;
    }
    let admin = crate::auth::authorise_admin(state, headers).is_ok();
    if admin || state.sessions.valid(session_cookie(headers)) {
        Access::Granted
    } else {
        Access::Login
    }
}

/// The session token of the request's cookie, if any.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            kv.trim()
                .strip_prefix(sessions::COOKIE)
                .and_then(|v| v.strip_prefix('='))
        })
}

/// The snapshot the page shows.
async fn snapshot_json(state: &ProxyState) -> String {
    let router = state.router();
    let models = router
        .models()
        .models()
        .iter()
        .map(|m| ModelInfo {
            name: m.entry.name.clone(),
            input_price: m.entry.input_price,
            output_price: m.entry.output_price,
        })
        .collect();
    let belief = router.belief_snapshot().await;
    let stats = automix::sync::lock(&state.dashboard);
    let data = DashboardData {
        uptime_secs: stats.uptime().as_secs(),
        window_secs: stats::WINDOW.as_secs(),
        ring_capacity: stats::RING_CAPACITY,
        score_bins: stats::SCORE_BINS,
        models,
        policy: router.policy_view(),
        since_start: stats.since_start(),
        recent: stats.recent(Instant::now()),
        belief,
    };
    // Serialising plain data cannot fail; an empty object keeps the page up if it did.
    serde_json::to_string(&data).unwrap_or_else(|_| "{}".into())
}

/// `GET /dashboard`.
pub(crate) async fn page(State(state): State<Arc<ProxyState>>, headers: HeaderMap) -> Response {
    match access(&state, &headers) {
        Access::Granted => {
            // `<` escaped so that no string in the data can close the script element.
            let data = snapshot_json(&state).await.replace('<', "\\u003c");
            html(
                StatusCode::OK,
                PAGE.replace("__AUTOMIX_DASHBOARD_DATA__", &data),
            )
        }
        Access::Login => html(StatusCode::UNAUTHORIZED, LOGIN.replace("__MESSAGE__", "")),
        Access::Disabled => html(
            StatusCode::FORBIDDEN,
            LOGIN.replace(
                "__MESSAGE__",
                "The dashboard needs an admin key, and none is configured: set AUTOMIX_ADMIN_KEYS.",
            ),
        ),
    }
}

/// `GET /dashboard/data`.
pub(crate) async fn data(
    State(state): State<Arc<ProxyState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    match access(&state, &headers) {
        Access::Granted => {
            let body = snapshot_json(&state).await;
            Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
        }
        Access::Login => Err(ApiError::status(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "the dashboard needs an admin key (bearer token or a login session)",
        )),
        Access::Disabled => Err(ApiError::status(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "the dashboard needs an admin key: set AUTOMIX_ADMIN_KEYS",
        )),
    }
}

/// The login form's fields.
#[derive(Debug, Deserialize)]
pub(crate) struct LoginForm {
    key: String,
}

/// `POST /dashboard/login`: an admin key in, a session cookie out.
pub(crate) async fn login(
    State(state): State<Arc<ProxyState>>,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("Bearer {}", form.key)) {
        headers.insert(header::AUTHORIZATION, v);
    }
    if state.settings.admin_keys.is_empty()
        || crate::auth::authorise_admin(&state, &headers).is_err()
    {
        return html(
            StatusCode::UNAUTHORIZED,
            LOGIN.replace("__MESSAGE__", "That is not an admin key."),
        );
    }
    let token = state.sessions.open();
    let cookie = format!(
        "{}={token}; HttpOnly; SameSite=Strict; Path=/dashboard; Max-Age={}",
        sessions::COOKIE,
        sessions::TTL.as_secs()
    );
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/dashboard")]).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// `POST /dashboard/logout`: ends the session and clears its cookie.
pub(crate) async fn logout(State(state): State<Arc<ProxyState>>, headers: HeaderMap) -> Response {
    if let Some(token) = session_cookie(&headers) {
        state.sessions.close(token);
    }
    let clear = format!(
        "{}=; HttpOnly; SameSite=Strict; Path=/dashboard; Max-Age=0",
        sessions::COOKIE
    );
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/dashboard")]).into_response();
    if let Ok(v) = HeaderValue::from_str(&clear) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// The dashboard's counts, behind the one lock the recording and the page share.
pub(crate) type SharedStats = std::sync::Mutex<DashboardStats>;
