//! Routes with the scope each one needs, declared where the route is: a router and its
//! table of (method, path template, scope), which the API-key middleware and the OpenAPI
//! check read instead of matching path strings.

use std::collections::HashMap;
use std::sync::Arc;

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{on, MethodFilter};
use axum::Router;

use crate::auth::{Access, Scope};

/// One route of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub method: Method,
    /// The path template, as axum matches it (`/v1/customers/{id}/features`).
    pub path: &'static str,
    /// The scope a caller needs when API keys are configured; `None` for open routes.
    pub scope: Option<Scope>,
}

/// A router whose every route was added with its scope.
#[derive(Debug)]
pub struct Routes<S = ()> {
    router: Router<S>,
    table: Vec<Route>,
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Self {
            router: Router::new(),
            table: Vec::new(),
        }
    }
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    pub fn new() -> Self {
        Self::default()
    }

    /// `GET path`, for callers with `scope` (`None`: for anyone).
    #[must_use]
    pub fn get<H, T>(self, path: &'static str, scope: Option<Scope>, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        self.add(Method::GET, MethodFilter::GET, path, scope, handler)
    }

    /// `POST path`, for callers with `scope`.
    #[must_use]
    pub fn post<H, T>(self, path: &'static str, scope: Option<Scope>, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        self.add(Method::POST, MethodFilter::POST, path, scope, handler)
    }

    /// `PUT path`, for callers with `scope`.
    #[must_use]
    pub fn put<H, T>(self, path: &'static str, scope: Option<Scope>, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        self.add(Method::PUT, MethodFilter::PUT, path, scope, handler)
    }

    /// `DELETE path`, for callers with `scope`.
    #[must_use]
    pub fn delete<H, T>(self, path: &'static str, scope: Option<Scope>, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        self.add(Method::DELETE, MethodFilter::DELETE, path, scope, handler)
    }

    fn add<H, T>(
        mut self,
        method: Method,
        filter: MethodFilter,
        path: &'static str,
        scope: Option<Scope>,
        handler: H,
    ) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        // A second method on a path joins the first one's (axum merges them).
        self.router = self.router.route(path, on(filter, handler));
        self.table.push(Route {
            method,
            path,
            scope,
        });
        self
    }

    /// The routes added so far and under another router, in one.
    #[must_use]
    pub fn merge(mut self, other: Routes<S>) -> Self {
        self.router = self.router.merge(other.router);
        self.table.extend(other.table);
        self
    }

    /// Applies `layer` to every route added so far (see [`Router::layer`]).
    #[must_use]
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: tower::Layer<axum::routing::Route> + Clone + Send + Sync + 'static,
        L::Service: tower::Service<axum::extract::Request> + Clone + Send + Sync + 'static,
        <L::Service as tower::Service<axum::extract::Request>>::Response:
            axum::response::IntoResponse + 'static,
        <L::Service as tower::Service<axum::extract::Request>>::Error:
            Into<std::convert::Infallible> + 'static,
        <L::Service as tower::Service<axum::extract::Request>>::Future: Send + 'static,
    {
        self.router = self.router.layer(layer);
        self
    }

    /// The routes with their state given: ready to merge with routes of other states.
    pub fn with_state<S2: Clone + Send + Sync + 'static>(self, state: S) -> Routes<S2> {
        Routes {
            router: self.router.with_state(state),
            table: self.table,
        }
    }

    /// Every route added, with its scope.
    pub fn table(&self) -> &[Route] {
        &self.table
    }

    /// The router, with API keys checked against each route's scope (see
    /// [`crate::auth::require_scopes`]).
    pub fn into_router(self, access: Arc<Access>) -> Router<S> {
        let scopes = Arc::new(Scopes::of(&self.table));
        self.router.layer(axum::middleware::from_fn_with_state(
            (access, scopes),
            crate::auth::require_scopes,
        ))
    }
}

/// The scope of each (method, path template) of a table.
#[derive(Debug, Default)]
pub struct Scopes(HashMap<&'static str, Vec<(Method, Option<Scope>)>>);

impl Scopes {
    pub fn of(table: &[Route]) -> Self {
        let mut by_path: HashMap<&'static str, Vec<(Method, Option<Scope>)>> = HashMap::new();
        for r in table {
            by_path
                .entry(r.path)
                .or_default()
                .push((r.method.clone(), r.scope));
        }
        Self(by_path)
    }

    /// The scope a request for `method` on the route matched as `template` needs. A
    /// request no route serves (404, 405) needs [`Scope::FeaturesRead`], so callers
    /// without a key learn nothing about which paths exist.
    pub fn required(&self, method: &Method, template: Option<&str>) -> Option<Scope> {
        let Some(template) = template else {
            return Some(Scope::FeaturesRead);
        };
        self.0
            .get(template)
            .and_then(|methods| methods.iter().find(|(m, _)| m == method))
            .map_or(Some(Scope::FeaturesRead), |(_, s)| *s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_holds_each_method_of_a_path_with_its_own_scope() {
        async fn ok() {}
        let routes: Routes = Routes::new()
            .get("/subjects/{s}", Some(Scope::FeaturesRead), ok)
            .post("/subjects/{s}", Some(Scope::Admin), ok)
            .get("/healthz", None, ok);
        let scopes = Scopes::of(routes.table());
        assert_eq!(
            scopes.required(&Method::GET, Some("/subjects/{s}")),
            Some(Scope::FeaturesRead)
        );
        assert_eq!(
            scopes.required(&Method::POST, Some("/subjects/{s}")),
            Some(Scope::Admin)
        );
        assert_eq!(scopes.required(&Method::GET, Some("/healthz")), None);
        // Not served: a key is needed to find that out.
        assert_eq!(
            scopes.required(&Method::DELETE, Some("/healthz")),
            Some(Scope::FeaturesRead)
        );
        assert_eq!(
            scopes.required(&Method::GET, None),
            Some(Scope::FeaturesRead)
        );
    }

    /// The router answers each (route, key) pair without a network: `oneshot` through
    /// the scope middleware, the errors in the one JSON shape.
    #[tokio::test]
    async fn keys_need_the_scope_of_the_route_they_call() {
        use axum::body::Body;
        use axum::http::Request;
        use tower::ServiceExt;

        use crate::auth::ApiKeys;

        async fn ok() -> &'static str {
            "ok"
        }
        let keys = ApiKeys::parse(
            "writer-key-0123456789=events:write;reader-key-0123456789=features:read",
        )
        .unwrap();
        let app = Routes::new()
            .post("/v1/events", Some(Scope::EventsWrite), ok)
            .get("/v1/customers/{id}/features", Some(Scope::FeaturesRead), ok)
            .post("/subjects/{s}/versions", Some(Scope::Admin), ok)
            .get("/subjects/{s}/versions", Some(Scope::FeaturesRead), ok)
            .get("/healthz", None, ok)
            .into_router(Access::new(keys, crate::auth::Limits::default()));
        let (reader, writer) = (Some("reader-key-0123456789"), Some("writer-key-0123456789"));
        let cases = [
            ("GET", "/healthz", None, 200),
            ("POST", "/v1/events", None, 401),
            ("POST", "/v1/events", Some("wrong-key-0123456789"), 401),
            ("POST", "/v1/events", reader, 403),
            ("POST", "/v1/events", writer, 200),
            ("GET", "/v1/customers/a/features", writer, 403),
            ("GET", "/v1/customers/a/features", reader, 200),
            ("GET", "/subjects/x/versions", reader, 200),
            ("POST", "/subjects/x/versions", reader, 403),
            ("POST", "/subjects/x/versions", writer, 403),
            // Paths no route serves: a key is needed to learn that.
            ("GET", "/nowhere", None, 401),
            ("GET", "/nowhere", reader, 404),
        ];
        for (method, path, key, want) in cases {
            let mut req = Request::builder().method(method).uri(path);
            if let Some(k) = key {
                req = req.header("authorization", format!("Bearer {k}"));
            }
            let resp = app
                .clone()
                .oneshot(req.body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), want, "{method} {path} with {key:?}");
            if want == 401 || want == 403 {
                let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
                    .await
                    .unwrap();
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert!(v["error"]["code"].is_string(), "{v}");
            }
        }
    }
}
