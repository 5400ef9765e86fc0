//! The OpenAPI document served at `/openapi.json`: the routes of DESIGN §6 with their
//! parameters and the shared error shape.

use serde_json::{json, Value};

/// A registry error in Confluent's shape (`error_code`, `message`).
fn registry_error(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"type": "object",
        "properties": {"error_code": {"type": "integer"}, "message": {"type": "string"}}}}}})
}

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

pub fn document() -> Value {
    let id = json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}});
    let as_of = json!({"name": "as_of", "in": "query", "required": false, "schema": {"type": "string"}, "description": "YYYY-MM-DD (the end of that day, UTC), RFC 3339 or epoch milliseconds"});
    let features = json!({"name": "features", "in": "query", "required": false, "schema": {"type": "string"}, "description": "comma-separated feature or score names"});
    let day = |name: &str, what: &str| {
        json!({"name": name, "in": "query", "required": false, "schema": {"type": "string"},
        "description": format!("{what} of the window, inclusive: YYYY-MM-DD, RFC 3339 or epoch milliseconds (UTC days)")})
    };
    let (from, to) = (
        day("from", "first day (default: 29 days before to)"),
        day("to", "last day (default: today)"),
    );
    let subject =
        json!({"name": "subject", "in": "path", "required": true, "schema": {"type": "string"}});
    let register_body = json!({"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["schema"],
        "properties": {"schema": {"type": "string"}, "schemaType": {"type": "string", "enum": ["AVRO"]},
        "references": {"type": "array", "items": {"type": "object"}}}}}}});
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
            "/v1/customers/{id}": {"delete": {"summary": "Erase a customer (scope admin): features, scores and score history go once the \
                    processor and the sink have read the request; events produced before it are skipped from then on",
                "parameters": [id],
                "responses": {"202": {"description": "the erasure request is on the broker"}, "400": error_response("bad customer id"),
                    "503": error_response("broker unavailable")}}},
            "/v1/features:batch": {"post": {"summary": "Features of many customers",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object",
                    "required": ["customer_ids"], "properties": {"customer_ids": {"type": "array", "items": {"type": "string"}},
                    "features": {"type": "array", "items": {"type": "string"}}, "as_of": {"type": "string"}}}}}},
                "responses": {"200": {"description": "features per customer"}, "400": error_response("bad request")}}},
            "/v1/segments": {"get": {"summary": "Customers per tier, RFM segment, cluster", "responses": {"200": {"description": "counts"}}}},
            "/v1/models/current": {"get": {"summary": "The model artefact in use, with its rollout (customers rescored with it so far)", "responses": {"200": {"description": "artefact and rollout"}, "404": error_response("no model yet")}}},
            "/v1/models": {"get": {"summary": "The model in use, its rollout and the model job's newest decisions (promoted or kept, and why), newest first", "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}}], "responses": {"200": {"description": "model history"}, "400": error_response("bad limit")}}},
            "/v1/stream/{topic}": {"get": {"summary": "Server-sent events from customer-scores or segment-changes. The first event, `ready`, \
                    carries the start position as its id; every update's id is the broker position after it; `lagged` says how many updates a slow \
                    subscriber missed (reconnect with Last-Event-ID to replay them)",
                "parameters": [{"name": "topic", "in": "path", "required": true, "schema": {"type": "string", "enum": ["customer-scores", "segment-changes"]}},
                    {"name": "customer_id", "in": "query", "required": false, "schema": {"type": "string"}},
                    {"name": "segment", "in": "query", "required": false, "schema": {"type": "string"}},
                    {"name": "Last-Event-ID", "in": "header", "required": false, "schema": {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)*$"},
                        "description": "resume after this event: the id of the last event received"}],
                "responses": {"200": {"description": "text/event-stream"}, "400": error_response("bad Last-Event-ID or query"),
                    "404": error_response("unknown stream"), "429": error_response("the key holds too many open streams"),
                    "503": error_response("broker unavailable")}}},
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
            "/subjects": {"get": {"summary": "Schema registry subjects (Confluent-compatible)", "responses": {"200": {"description": "subjects"}}}},
            "/subjects/{subject}": {"post": {"summary": "Is this schema registered under the subject? (scope admin)",
                "parameters": [subject.clone()], "requestBody": register_body.clone(),
                "responses": {"200": {"description": "subject, version, id and schema"}, "404": registry_error("unknown subject or schema"),
                    "422": registry_error("invalid schema")}}},
            "/subjects/{subject}/versions": {
                "get": {"summary": "Versions of a subject", "parameters": [subject.clone()],
                    "responses": {"200": {"description": "version numbers"}, "404": registry_error("unknown subject")}},
                "post": {"summary": "Register a schema under a subject (BACKWARD compatibility; scope admin)",
                    "parameters": [subject.clone()], "requestBody": register_body,
                    "responses": {"200": {"description": "the schema's global id"}, "409": registry_error("incompatible with the latest version"),
                        "422": registry_error("invalid schema")}}},
            "/subjects/{subject}/versions/{version}": {"get": {"summary": "One version of a subject",
                "parameters": [subject, {"name": "version", "in": "path", "required": true, "schema": {"type": "string"}, "description": "a version number or `latest`"}],
                "responses": {"200": {"description": "subject, version, id and schema"}, "404": registry_error("unknown subject or version"),
                    "422": registry_error("bad version")}}},
            "/config": {"get": {"summary": "The registry's compatibility level", "responses": {"200": {"description": "compatibilityLevel"}}}},
            "/dashboard": {"get": {"summary": "The live dashboard (HTML)", "responses": {"200": {"description": "text/html"}}}},
            "/schemas/ids/{id}": {"get": {"summary": "Schema by global id", "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}}],
                "responses": {"200": {"description": "schema"}, "404": {"description": "unknown id"}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.0"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text"}}}},
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "ok"}}}},
            "/readyz": {"get": {"summary": "Readiness: Redis and broker answer", "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}}}}
        },
        "components": {"schemas": {"Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object",
            "required": ["code", "message", "details"], "properties": {"code": {"type": "string"}, "message": {"type": "string"},
            "details": {"type": "array", "items": {}}}}}}}}
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    #[test]
    fn every_route_of_the_api_is_documented_and_nothing_else() {
        let served: BTreeSet<(String, String)> = crate::route_table()
            .iter()
            .map(|r| (r.method.as_str().to_ascii_lowercase(), r.path.to_owned()))
            .collect();
        assert!(served.len() >= 20, "found only {served:?}");
        let doc = super::document();
        let documented: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, ops)| {
                ops.as_object()
                    .unwrap()
                    .keys()
                    .map(move |m| (m.clone(), path.clone()))
            })
            .collect();
        assert_eq!(
            served.difference(&documented).collect::<Vec<_>>(),
            Vec::<&(String, String)>::new(),
            "served but not in /openapi.json"
        );
        assert_eq!(
            documented.difference(&served).collect::<Vec<_>>(),
            Vec::<&(String, String)>::new(),
            "in /openapi.json but not served"
        );
    }
}
