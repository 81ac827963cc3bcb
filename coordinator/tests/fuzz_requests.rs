//! Fuzzing of request decoding, time-bounded (a fixed number of cases per run): every route
//! that takes input gets random JSON trees, near-miss bodies built from its own fields, random
//! bytes and hostile path and query parameters. The answer is never a 5xx, and every error is
//! a JSON body with an `error` message.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use coordinator::api::{hash_secret, new_secret, now};
use coordinator::engine::Engine;
use coordinator::server::{Config, FileConfig, app, state};
use http_body_util::BodyExt;
use proptest::prelude::*;
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;

struct Target {
    app: Router,
    rt: tokio::runtime::Runtime,
    volunteer: String,
    key: String,
    _dir: tempfile::TempDir,
}

fn target() -> Target {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::resolve(
        FileConfig::default(),
        None,
        Some(dir.path().to_path_buf()),
        None,
        Some(dir.path().to_path_buf()),
    );
    cfg.registrations_per_minute = 0.0;
    cfg.batches_per_minute_per_key = 0.0;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = Arc::new(Engine::sqlite(&dir.path().join("qg.sqlite")).unwrap());
    let key = new_secret("qgk_");
    store
        .create_key("fuzz", &hash_secret(&key), true, now())
        .unwrap();
    let app = rt.block_on(async { app(state(store.clone(), &cfg).unwrap(), &cfg) });
    let mut t = Target {
        app,
        rt,
        volunteer: String::new(),
        key,
        _dir: dir,
    };
    let (s, v) = t.call("POST", "/api/v1/volunteers", None, b"{}".to_vec());
    assert_eq!(s, StatusCode::CREATED);
    t.volunteer = serde_json::from_slice::<Value>(&v).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let units = json!([{"L": 16, "beta": 0.4, "sweeps": 5, "seed": 1}]);
    let body = json!({"kernel": "ising2d", "units": units}).to_string();
    let key = t.key.clone();
    let (s, _) = t.call("POST", "/api/v1/batches", Some(&key), body.into_bytes());
    assert_eq!(s, StatusCode::CREATED);
    t
}

impl Target {
    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Vec<u8>) {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(Body::from(body)).unwrap();
        self.rt.block_on(async {
            let resp = self.app.clone().oneshot(req).await.unwrap();
            let status = resp.status();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            (status, bytes.to_vec())
        })
    }
}

/// Routes that decode input: method, path, who calls it, and field names to mix in.
const ROUTES: &[(&str, &str, Who, &[&str])] = &[
    ("POST", "/api/v1/volunteers", Who::Nobody, &["nickname"]),
    (
        "POST",
        "/api/v1/volunteers/me",
        Who::Volunteer,
        &["nickname"],
    ),
    (
        "POST",
        "/api/v1/work",
        Who::Volunteer,
        &["max_units", "adapter", "kernels", "backend"],
    ),
    (
        "POST",
        "/api/v1/results",
        Who::Volunteer,
        &[
            "assignment_id",
            "digest",
            "output",
            "checkpoints",
            "error",
            "reports",
            "elapsed_s",
        ],
    ),
    (
        "POST",
        "/api/v1/challenges/1",
        Who::Volunteer,
        &["step", "state"],
    ),
    (
        "POST",
        "/api/v1/batches",
        Who::Scientist,
        &["kernel", "units", "policy", "axes", "name"],
    ),
    (
        "POST",
        "/api/v1/specs",
        Who::Scientist,
        &["kernel", "params", "sweep", "seeds"],
    ),
    (
        "POST",
        "/api/v1/verifier/work",
        Who::Scientist,
        &["max_jobs", "kernels"],
    ),
    (
        "POST",
        "/api/v1/verifier/results",
        Who::Scientist,
        &["job_id", "digest", "output", "state_digest"],
    ),
    (
        "POST",
        "/api/v1/log/cosignatures",
        Who::Nobody,
        &["checkpoint", "cosignature"],
    ),
    ("POST", "/api/v1/batches/1/cancel", Who::Scientist, &[]),
];

#[derive(Clone, Copy, Debug)]
enum Who {
    Nobody,
    Volunteer,
    Scientist,
}

fn json_tree() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,16}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{0,10}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn body_for(fields: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    let near_miss = prop::collection::vec(
        (
            prop::sample::select(if fields.is_empty() {
                &["x"][..]
            } else {
                fields
            }),
            json_tree(),
        ),
        0..5,
    )
    .prop_map(|kv| {
        Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            .to_string()
            .into_bytes()
    });
    prop_oneof![
        near_miss,
        json_tree().prop_map(|v| v.to_string().into_bytes()),
        prop::collection::vec(any::<u8>(), 0..64),
    ]
}

fn request() -> impl Strategy<Value = (usize, Vec<u8>)> {
    (0..ROUTES.len()).prop_flat_map(|i| (Just(i), body_for(ROUTES[i].3)))
}

fn assert_clean(what: &str, status: StatusCode, body: &[u8]) {
    assert!(
        !status.is_server_error(),
        "{what}: {status} {}",
        String::from_utf8_lossy(body)
    );
    if status.is_client_error() {
        let v: Value = serde_json::from_slice(body).unwrap_or_else(|_| {
            panic!(
                "{what}: {status} is not JSON: {}",
                String::from_utf8_lossy(body)
            )
        });
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {v}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn bodies_never_get_a_server_error_and_errors_are_json((route, body) in request()) {
        thread_local!(static T: Target = target());
        T.with(|t| {
            let (method, path, who, _) = ROUTES[route];
            let token = match who {
                Who::Nobody => None,
                Who::Volunteer => Some(t.volunteer.as_str()),
                Who::Scientist => Some(t.key.as_str()),
            };
            let (status, resp) = t.call(method, path, token, body.clone());
            assert_clean(&format!("{method} {path} {}", String::from_utf8_lossy(&body)), status, &resp);
        });
    }

    #[test]
    fn paths_and_queries_never_get_a_server_error(
        seg in prop_oneof!["-?[0-9]{1,25}", "[a-z%0-9.]{0,12}", Just(String::from("9223372036854775807"))],
        query in "[a-z_]{1,10}=[-0-9a-z%.]{0,12}",
        which in 0usize..9,
    ) {
        thread_local!(static T: Target = target());
        T.with(|t| {
            let path = match which {
                0 => format!("/api/v1/batches/{seg}?{query}"),
                1 => format!("/api/v1/batches/{seg}/results?{query}"),
                2 => format!("/api/v1/units/{seg}"),
                3 => format!("/api/v1/batches/{seg}/proofs?{query}"),
                4 => format!("/api/v1/batches/{seg}/aggregate?{query}"),
                5 => format!("/api/v1/log/consistency?{query}&from={seg}"),
                6 => format!("/log/tile/{seg}/{seg}"),
                7 => format!("/api/v1/leaderboard?{query}"),
                _ => format!("/api/v1/batches?{query}"),
            };
            let Ok(uri) = path.parse::<axum::http::Uri>() else { return };
            let key = t.key.clone();
            let (status, resp) = t.call("GET", &uri.to_string(), Some(&key), Vec::new());
            assert_clean(&path, status, &resp);
        });
    }
}
