//! Metrics: counters are exact under concurrency and the Prometheus endpoint serves them.

use crate::helpers::*;
use std::sync::Arc;
use wechat_sim::{Fault, FaultEndpoint};

/// The value of the first sample of `name` whose labels contain every `labels` pair.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn login_and_wechat_counters_are_exact_after_concurrent_traffic() {
    let handle = mp_auth::telemetry::prometheus().unwrap();
    let app = Arc::new(TestApp::spawn().await);
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            app.login_with_phone_code(app.app_id(), &unique_user(), None)
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    for _ in 0..3 {
        app.sim_client
            .set_fault(&Fault {
                errcode: Some(40226),
                ..Fault::on(FaultEndpoint::Jscode2Session)
            })
            .await
            .unwrap();
        app.login_with_phone_code(app.app_id(), &unique_user(), None)
            .await
            .unwrap_err();
    }
    let text = handle.render();
    let id = app.app_id();
    assert_eq!(
        sample(
            &text,
            "mp_auth_logins_total",
            &[("app_id", id), ("outcome", "success")]
        ),
        40.0
    );
    assert_eq!(
        sample(
            &text,
            "mp_auth_logins_total",
            &[("app_id", id), ("reason", "USER_BLOCKED")]
        ),
        3.0
    );
    assert_eq!(
        sample(
            &text,
            "mp_auth_wechat_token_refreshes_total",
            &[("app_id", id)]
        ),
        1.0,
        "single-flight token fetch"
    );
    assert!(
        text.contains("mp_auth_wechat_call_duration_seconds_bucket"),
        "histograms are exported"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_metrics_endpoint_serves_prometheus_text() {
    mp_auth::telemetry::prometheus().unwrap();
    metrics::counter!("mp_auth_logins_total", "outcome" => "success", "reason" => "OK", "flow" => "test", "app_id" => "wx_metrics_probe").increment(1);
    let addr =
        mp_auth::telemetry::serve_metrics(([127, 0, 0, 1], 0).into(), std::future::pending())
            .await
            .unwrap();
    mp_auth::tls::install_crypto_provider();
    let resp = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let body = resp.text().await.unwrap();
    assert!(
        body.contains("# TYPE mp_auth_logins_total counter"),
        "{body}"
    );
    assert!(body.contains("app_id=\"wx_metrics_probe\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn padded_or_unknown_app_ids_add_no_metric_series() {
    let handle = mp_auth::telemetry::prometheus().unwrap();
    let app = TestApp::spawn().await;
    let id = app.app_id().to_owned();
    for k in 1..=20 {
        for padded in [
            format!("{}{id}", " ".repeat(k)),
            format!("{id}{}", "\t".repeat(k)),
        ] {
            let status = app
                .login_raw(phone_code_request(
                    padded,
                    WELL_FORMED_CODE,
                    WELL_FORMED_PHONE_CODE,
                ))
                .await
                .unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert_eq!(reason(&status), "INVALID_ARGUMENT");
        }
        // A well-formed id that is not configured is labelled with nothing either.
        let status = app
            .login_raw(phone_code_request(
                format!("wxunknown{k:07}"),
                WELL_FORMED_CODE,
                WELL_FORMED_PHONE_CODE,
            ))
            .await
            .unwrap_err();
        assert_eq!(reason(&status), "UNKNOWN_APP");
    }
    let text = handle.render();
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("mp_auth_logins_total{"))
        .filter(|l| l.contains(&id) || l.contains("wxunknown"))
        .collect();
    assert!(
        series
            .iter()
            .all(|l| l.contains(&format!("app_id=\"{id}\""))),
        "only the configured id may appear as a label: {series:?}"
    );
    assert!(
        !text.contains("wxunknown"),
        "unknown app ids never become labels"
    );
}
