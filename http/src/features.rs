//! Feature lookups, segments and the model in use over HTTP (DESIGN §6). Time-dependent
//! features and scores are computed as of the request (or `as_of`) from the stored state
//! and the current model, so a lookup is never stale because no event arrived.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::ApiError;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use custflow_feature_store::conn::Redis;
use custflow_models::artefact::ModelArtefact;
use custflow_schemas::FieldError;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use custflow_feature_store::features::{compute, Features};
use custflow_feature_store::keys::{self, Keys};
use custflow_feature_store::model::ModelHandle;
use custflow_feature_store::state::CustomerState;

use crate::auth::Scope;
use crate::routes::Routes;

/// Most customers in one batch lookup.
pub const MAX_BATCH: usize = 1000;

/// What the feature routes need.
#[derive(Clone)]
pub struct FeatureState {
    pub redis: Redis,
    pub keys: Keys,
    pub model: ModelHandle,
    pub at_risk_days: f64,
}

/// The feature routes.
pub fn routes() -> Routes<FeatureState> {
    let read = Some(Scope::FeaturesRead);
    Routes::new()
        .get("/v1/customers/{id}/features", read, get_features)
        .post("/v1/features:batch", read, batch)
        .get("/v1/segments", read, segments)
        .get("/v1/models/current", read, current_model)
        .get("/v1/models", read, list_models)
}

/// Most decisions `GET /v1/models` returns.
pub const MAX_DECISIONS: usize = custflow_feature_store::model::DECISIONS_KEPT as usize;

#[derive(Debug, Deserialize)]
struct LookupQuery {
    as_of: Option<String>,
    /// Comma-separated feature or score names.
    features: Option<String>,
}

/// Parses `as_of` (a date meaning its end in UTC, RFC 3339 or epoch milliseconds); now
/// when absent.
pub fn parse_as_of(v: Option<&str>, path: &str) -> Result<i64, FieldError> {
    match v {
        None => Ok(custflow_schemas::time::now_ms()),
        Some(s) => custflow_schemas::time::parse_instant(s).ok_or_else(|| {
            FieldError::new(
                path,
                "format",
                format!(
                    "{s:?} is not a date (YYYY-MM-DD, its end in UTC), an RFC 3339 timestamp \
                     or epoch milliseconds"
                ),
            )
        }),
    }
}

/// Features and (with a model) scores of one customer, as JSON objects.
pub fn lookup_body(
    customer: &str,
    f: &Features,
    model: Option<&ModelArtefact>,
    select: Option<&[String]>,
) -> Value {
    let mut features = match serde_json::to_value(f) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let mut scores = Map::new();
    if let Some(m) = model.filter(|_| f.orders_total > 0) {
        let s = m.score(&f.churn_input());
        if let Ok(Value::Object(o)) = serde_json::to_value(&s) {
            scores = o;
        }
        scores.insert("model_version".into(), json!(m.version));
    }
    if let Some(sel) = select {
        features.retain(|k, _| sel.iter().any(|s| s == k));
        scores.retain(|k, _| sel.iter().any(|s| s == k));
    }
    json!({"customer_id": customer, "as_of": f.as_of, "features": features, "scores": if model.is_some() { Value::Object(scores) } else { Value::Null }})
}

fn known_names() -> Vec<&'static str> {
    vec![
        "first_order_at",
        "last_order_at",
        "orders_total",
        "spend_total",
        "frequency",
        "recency",
        "age",
        "monetary_value",
        "days_since_last_order",
        "aov",
        "orders_7d",
        "orders_30d",
        "orders_90d",
        "spend_7d",
        "spend_30d",
        "spend_90d",
        "avg_gap_days",
        "spend_change_pct",
        "at_risk",
        "discount_share",
        "favourite_category",
        "favourite_location",
        "favourite_daypart",
        "loyalty_member",
        "last_activity_at",
        "p_alive",
        "churn_probability",
        "expected_orders_90d",
        "expected_aov",
        "clv_12m",
        "value_tier",
        "r_score",
        "f_score",
        "m_score",
        "rfm_segment",
        "cluster",
        "retention_target",
        "expected_retention_profit",
        "model_version",
    ]
}

fn selection(names: Vec<String>, path: &str) -> Result<Option<Vec<String>>, Vec<FieldError>> {
    if names.is_empty() {
        return Ok(None);
    }
    let known = known_names();
    let errs: Vec<FieldError> = names
        .iter()
        .enumerate()
        .filter(|(_, n)| !known.contains(&n.as_str()))
        .map(|(i, n)| {
            FieldError::new(
                format!("{path}[{i}]"),
                "unknown",
                format!("{n:?} is not a feature or score"),
            )
        })
        .collect();
    if errs.is_empty() {
        Ok(Some(names))
    } else {
        Err(errs)
    }
}

/// The stored states of `ids` and the model to score them with, in one Redis round trip:
/// the version in use comes with the states, and the artefact is reloaded only when it
/// changed. While the processors rebuild state Redis lost (or have not built it yet), the
/// answer is 503: a missing or partial state would be a wrong answer.
async fn load(
    st: &FeatureState,
    ids: &[String],
) -> Result<(Vec<Option<CustomerState>>, Option<Arc<ModelArtefact>>), ApiError> {
    let mut pipe = redis::pipe();
    pipe.exists(st.keys.state_ready());
    pipe.get(st.keys.model_current());
    for id in ids {
        keys::push_lookup(&st.keys, &mut pipe, id);
    }
    let unavailable =
        |e: redis::RedisError| ApiError::unavailable(format!("Redis does not answer: {e}"), 1);
    let mut conn = st.redis.clone();
    let (version, raw): (Option<String>, Vec<Option<Vec<u8>>>) = {
        let all: Vec<redis::Value> = pipe.query_async(&mut conn).await.map_err(unavailable)?;
        let mut values = all.into_iter();
        let ready = values
            .next()
            .map(|v| redis::from_redis_value::<bool>(&v))
            .transpose()
            .map_err(ApiError::internal)?
            .unwrap_or(false);
        if !ready {
            return Err(not_ready());
        }
        let version = values
            .next()
            .map(|v| redis::from_redis_value::<Option<String>>(&v))
            .transpose()
            .map_err(ApiError::internal)?
            .flatten();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let raw = keys::located_states(&mut conn, &st.keys, &ids, values.collect())
            .await
            .map_err(unavailable)?;
        (version, raw)
    };
    let states = raw
        .into_iter()
        .map(|b| {
            b.map(|b| CustomerState::decode(&b).map_err(ApiError::internal))
                .transpose()
                // What an erasure left is no customer.
                .map(|s| s.filter(|s| !s.is_blank()))
        })
        .collect::<Result<_, _>>()?;
    let cached = st.model.current();
    let model = match version {
        Some(v) if cached.as_ref().is_none_or(|m| m.version != v) => refresh_model(st).await,
        _ => cached,
    };
    Ok((states, model))
}

/// The answer while the processors (re)build the features from the topics.
pub fn not_ready() -> ApiError {
    ApiError::unavailable(
        "features are being built from the topics (after a start on an empty Redis, or \
         Redis losing its data); retry shortly",
        2,
    )
}

async fn refresh_model(st: &FeatureState) -> Option<Arc<ModelArtefact>> {
    if let Err(e) = st.model.refresh(&mut st.redis.clone(), &st.keys).await {
        tracing::warn!(error = %e, "model refresh failed; serving the cached one");
    }
    st.model.current()
}

async fn get_features(
    State(st): State<FeatureState>,
    Path(id): Path<String>,
    q: Result<Query<LookupQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q?;
    let mut errs = Vec::new();
    let as_of = parse_as_of(q.as_of.as_deref(), "as_of")
        .map_err(|e| errs.push(e))
        .unwrap_or(0);
    let names: Vec<String> = q
        .features
        .as_deref()
        .map(|s| {
            s.split(',')
                .map(|x| x.trim().to_owned())
                .filter(|x| !x.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let select = selection(names, "features")
        .map_err(|e| errs.extend(e))
        .unwrap_or(None);
    if !errs.is_empty() {
        return Err(ApiError::bad_request("invalid query", &errs));
    }
    let (mut states, model) = load(&st, std::slice::from_ref(&id)).await?;
    let Some(state) = states.pop().flatten() else {
        return Err(ApiError::not_found(format!("no customer {id:?}")));
    };
    let f = compute(&state, as_of, st.at_risk_days);
    Ok(Json(lookup_body(
        &id,
        &f,
        model.as_deref(),
        select.as_deref(),
    )))
}

async fn batch(
    State(st): State<FeatureState>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body?;
    let mut errs = Vec::new();
    let ids: Vec<String> = match body.get("customer_ids") {
        Some(Value::Array(a)) if a.is_empty() => {
            errs.push(FieldError::new(
                "customer_ids",
                "empty",
                "must not be empty",
            ));
            vec![]
        }
        Some(Value::Array(a)) if a.len() > MAX_BATCH => {
            errs.push(FieldError::new(
                "customer_ids",
                "too_many",
                format!("at most {MAX_BATCH} ids"),
            ));
            vec![]
        }
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .filter_map(|(i, v)| match v.as_str() {
                Some(s) if !s.is_empty() => Some(s.to_owned()),
                _ => {
                    errs.push(FieldError::new(
                        format!("customer_ids[{i}]"),
                        "type",
                        "must be a non-empty string",
                    ));
                    None
                }
            })
            .collect(),
        Some(_) => {
            errs.push(FieldError::new(
                "customer_ids",
                "type",
                "must be an array of strings",
            ));
            vec![]
        }
        None => {
            errs.push(FieldError::new("customer_ids", "missing", "required"));
            vec![]
        }
    };
    let names: Vec<String> = match body.get("features") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                let s = v.as_str().map(str::to_owned);
                if s.is_none() {
                    errs.push(FieldError::new(
                        format!("features[{i}]"),
                        "type",
                        "must be a string",
                    ));
                }
                s
            })
            .collect(),
        Some(_) => {
            errs.push(FieldError::new(
                "features",
                "type",
                "must be an array of strings",
            ));
            vec![]
        }
    };
    let select = selection(names, "features")
        .map_err(|e| errs.extend(e))
        .unwrap_or(None);
    let as_of = parse_as_of(body.get("as_of").and_then(Value::as_str), "as_of")
        .map_err(|e| errs.push(e))
        .unwrap_or(0);
    if !errs.is_empty() {
        return Err(ApiError::bad_request("invalid request", &errs));
    }
    let (states, model) = load(&st, &ids).await?;
    let customers: Vec<Value> = ids
        .iter()
        .zip(states)
        .map(|(id, s)| match s {
            Some(s) => lookup_body(id, &compute(&s, as_of, st.at_risk_days), model.as_deref(), select.as_deref()),
            None => json!({"customer_id": id, "error": {"code": "not_found", "message": format!("no customer {id:?}")}}),
        })
        .collect();
    Ok(Json(json!({"customers": customers})))
}

/// Customers per value tier, RFM segment, cluster and at-risk flag, from the counters
/// the processors keep (`/v1/segments`, and the demo's terminal summary).
pub async fn segment_counts<C: redis::aio::ConnectionLike + Send>(
    redis: &mut C,
    keys: &Keys,
) -> redis::RedisResult<Value> {
    let mut pipe = redis::pipe();
    for p in keys.shards(keys::partitions(redis, keys).await?) {
        pipe.cmd("HGETALL").arg(keys.segment_counts(p));
    }
    let shards: Vec<BTreeMap<String, i64>> = if pipe.is_empty() {
        Vec::new()
    } else {
        pipe.query_async(redis).await?
    };
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    for (k, v) in shards.into_iter().flatten() {
        *counts.entry(k).or_default() += v;
    }
    let mut out: BTreeMap<&str, BTreeMap<String, i64>> = BTreeMap::new();
    for t in custflow_models::rfm::TIERS {
        out.entry("value_tier").or_default().insert(t.to_owned(), 0);
    }
    for s in custflow_models::rfm::SEGMENTS {
        out.entry("rfm_segment")
            .or_default()
            .insert(s.to_owned(), 0);
    }
    out.entry("cluster").or_default();
    for (k, v) in counts {
        let (dim, value) = k.split_once(':').unwrap_or(("other", &k));
        let dim = match dim {
            "tier" => "value_tier",
            "segment" => "rfm_segment",
            "cluster" => "cluster",
            "at_risk" => "at_risk",
            _ => "other",
        };
        out.entry(dim).or_default().insert(value.to_owned(), v);
    }
    let scored: i64 = out.get("value_tier").map(|m| m.values().sum()).unwrap_or(0);
    Ok(json!({"customers_scored": scored, "counts": out}))
}

async fn segments(State(st): State<FeatureState>) -> Result<Json<Value>, ApiError> {
    segment_counts(&mut st.redis.clone(), &st.keys)
        .await
        .map(Json)
        .map_err(|e| ApiError::unavailable(format!("Redis does not answer: {e}"), 1))
}

async fn current_model(State(st): State<FeatureState>) -> Result<Json<Value>, ApiError> {
    let Some(m) = refresh_model(&st).await else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_model",
            "no model has been fitted yet; the model job fits one once customers have orders",
        ));
    };
    let mut body = serde_json::to_value(&*m).map_err(ApiError::internal)?;
    let rollout = rollout(&st, &m.version).await?;
    if let Some(o) = body.as_object_mut() {
        o.insert("rollout".into(), rollout);
    }
    Ok(Json(body))
}

/// How far the rollout of `version` to every customer has got (`null` before the
/// processors recorded their partitions).
async fn rollout(st: &FeatureState, version: &str) -> Result<Value, ApiError> {
    let r = custflow_feature_store::model::rollout(&mut st.redis.clone(), &st.keys, version)
        .await
        .map_err(ApiError::internal)?;
    serde_json::to_value(r).map_err(ApiError::internal)
}

#[derive(Debug, Deserialize)]
struct ModelsQuery {
    limit: Option<String>,
}

/// The model in use, its rollout, and the model job's newest decisions (each refit,
/// promoted or kept, with why and what the comparison found), newest first.
async fn list_models(
    State(st): State<FeatureState>,
    q: Result<Query<ModelsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q?;
    let limit = match q.limit.as_deref() {
        None => 50,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_DECISIONS).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(
                    "invalid query",
                    &[FieldError::new(
                        "limit",
                        "range",
                        format!("{v:?} is not a whole number from 1 to {MAX_DECISIONS}"),
                    )],
                ))
            }
        },
    };
    let current = refresh_model(&st).await;
    let decisions =
        custflow_feature_store::model::decisions(&mut st.redis.clone(), &st.keys, limit)
            .await
            .map_err(ApiError::internal)?;
    let rollout = match &current {
        Some(m) => rollout(&st, &m.version).await?,
        None => Value::Null,
    };
    Ok(Json(json!({
        "current": current.as_ref().map(|m| json!({
            "version": m.version,
            "created_at_ms": m.created_at_ms,
            "champion": m.champion.as_str(),
            "customers": m.training.customers,
            "metrics": m.metrics,
        })),
        "rollout": rollout,
        "decisions": decisions,
    })))
}
