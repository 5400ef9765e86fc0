//! The OpenAPI document served at `/openapi.json`: the routes of DESIGN §6 with their
//! parameters and the shared error shape.

use serde_json::{json, Value};

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

pub(crate) fn document() -> Value {
    let id = json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}});
    let as_of = json!({"name": "as_of", "in": "query", "required": false, "schema": {"type": "string"}, "description": "RFC 3339 or epoch milliseconds"});
    let features = json!({"name": "features", "in": "query", "required": false, "schema": {"type": "string"}, "description": "comma-separated feature or score names"});
    let day = |name: &str, what: &str| {
        json!({"name": name, "in": "query", "required": false, "schema": {"type": "string"},
        "description": format!("{what} of the window, inclusive: YYYY-MM-DD, RFC 3339 or epoch milliseconds (UTC days)")})
    };
    let (from, to) = (
        day("from", "first day (default: 29 days before to)"),
        day("to", "last day (default: today)"),
    );
    let sales_responses = json!({"200": {"description": "rollups"}, "400": error_response("bad query (field paths in details)"),
        "401": error_response("no API key"), "403": error_response("the key lacks sales:read"), "503": error_response("Redis unavailable")});
    json!({
        "openapi": "3.0.3",
        "info": {"title": "custflow", "version": env!("CARGO_PKG_VERSION")},
        "paths": {
            "/v1/events": {"post": {
                "summary": "Ingest events (JSON object, array, or NDJSON)",
                "parameters": [{"name": "Idempotency-Key", "in": "header", "required": false, "schema": {"type": "string"}}],
                "requestBody": {"required": true, "content": {
                    "application/json": {"schema": {"oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}}]}},
                    "application/x-ndjson": {"schema": {"type": "string"}}}},
                "responses": {"200": {"description": "per-item results"}, "400": error_response("no valid event"),
                    "413": error_response("too large"), "415": error_response("unsupported media type"),
                    "429": error_response("overloaded"), "503": error_response("broker unavailable")}}},
            "/v1/customers/{id}/features": {"get": {"summary": "Features and scores of one customer",
                "parameters": [id, as_of, features],
                "responses": {"200": {"description": "features"}, "400": error_response("bad query"), "404": error_response("unknown customer")}}},
            "/v1/features:batch": {"post": {"summary": "Features of many customers",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object",
                    "required": ["customer_ids"], "properties": {"customer_ids": {"type": "array", "items": {"type": "string"}},
                    "features": {"type": "array", "items": {"type": "string"}}, "as_of": {"type": "string"}}}}}},
                "responses": {"200": {"description": "features per customer"}, "400": error_response("bad request")}}},
            "/v1/segments": {"get": {"summary": "Customers per tier, RFM segment, cluster", "responses": {"200": {"description": "counts"}}}},
            "/v1/models/current": {"get": {"summary": "The model artefact in use", "responses": {"200": {"description": "artefact"}, "404": error_response("no model yet")}}},
            "/v1/stream/{topic}": {"get": {"summary": "Server-sent events from customer-scores or segment-changes",
                "parameters": [{"name": "topic", "in": "path", "required": true, "schema": {"type": "string", "enum": ["customer-scores", "segment-changes"]}},
                    {"name": "customer_id", "in": "query", "required": false, "schema": {"type": "string"}},
                    {"name": "segment", "in": "query", "required": false, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "text/event-stream"}, "404": error_response("unknown stream")}}},
            "/v1/sales/trends": {"get": {"summary": "Sales rollups per period (scope sales:read): revenue, orders, AOV, customers, discounts, refunds",
                "parameters": [from, to,
                    {"name": "grain", "in": "query", "required": false, "schema": {"type": "string", "enum": ["day", "week", "month"], "default": "day"}},
                    {"name": "dimension", "in": "query", "required": false, "schema": {"type": "string",
                        "enum": ["all", "location", "category", "daypart", "loyalty", "discount"], "default": "all"}},
                    {"name": "value", "in": "query", "required": false, "schema": {"type": "string"}, "description": "only this value of the dimension (zero-filled)"}],
                "responses": sales_responses}},
            "/v1/sales/top-locations": {"get": {"summary": "Locations ranked over a window (scope sales:read)",
                "parameters": [from, to,
                    {"name": "by", "in": "query", "required": false, "schema": {"type": "string",
                        "enum": ["revenue", "aov", "orders", "orders_per_day", "customers"], "default": "revenue"}},
                    {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10}}],
                "responses": sales_responses}},
            "/v1/sales/discounts": {"get": {"summary": "Discount codes: orders, AOV uplift, 30-day return of first-order customers (scope sales:read)",
                "parameters": [from, to], "responses": sales_responses}},
            "/v1/sales/loyalty": {"get": {"summary": "Loyalty members vs non-members: spend, frequency, monthly retention (scope sales:read)",
                "parameters": [from, to], "responses": sales_responses}},
            "/v1/stats": {"get": {"summary": "Live figures of this process", "responses": {"200": {"description": "figures"}}}},
            "/subjects": {"get": {"summary": "Schema registry subjects", "responses": {"200": {"description": "subjects"}}}},
            "/schemas/ids/{id}": {"get": {"summary": "Schema by global id", "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}}],
                "responses": {"200": {"description": "schema"}, "404": {"description": "unknown id"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text"}}}},
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "ok"}}}},
            "/readyz": {"get": {"summary": "Readiness: Redis and broker answer", "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}}}}
        },
        "components": {"schemas": {"Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object",
            "required": ["code", "message", "details"], "properties": {"code": {"type": "string"}, "message": {"type": "string"},
            "details": {"type": "array", "items": {}}}}}}}}
    })
}
