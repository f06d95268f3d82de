//! The worldtimeapi.org stand-in over real sockets.

use crate::common;
use std::net::SocketAddr;

use crate::common::{raw_get, spawn};

const RESTTEMPLATE_ACCEPT: &str = "text/plain, application/json, application/*+json, */*";
const EUROPE_PREFIX: &str = "Europe/Amsterdam\nEurope/Andorra\nEurope/Astrakhan\nEurope/Athens\nEurope/Belgrade\nEurope/Berlin\n";

async fn worldtime() -> SocketAddr {
    spawn(meshbox_apps::run_worldtime).await
}

fn is_text(response: &common::RawResponse) -> bool {
    response
        .header("content-type")
        .is_some_and(|v| v.starts_with("text/plain"))
}

fn is_json(response: &common::RawResponse) -> bool {
    response
        .header("content-type")
        .is_some_and(|v| v.starts_with("application/json"))
}

#[tokio::test]
async fn europe_as_text_when_text_is_preferred() {
    let wt = worldtime().await;
    let response = raw_get(
        wt,
        "/api/timezone/Europe",
        &[("Accept", RESTTEMPLATE_ACCEPT)],
    )
    .await;
    assert_eq!(response.status, 200);
    assert!(is_text(&response));
    assert!(
        response.body.starts_with(EUROPE_PREFIX),
        "{}",
        response.body
    );
    assert!(response.body.ends_with('\n'));
    assert!(response.body.lines().all(|l| l.starts_with("Europe/")));
    assert!(response.body.lines().any(|l| l == "Europe/Zurich"));
    assert!(!response.body.contains("Europe/Belfast"));

    for accept in ["text/plain", "text/*", "application/json;q=0.5, text/plain"] {
        let response = raw_get(wt, "/api/timezone/Europe", &[("Accept", accept)]).await;
        assert!(is_text(&response), "{accept}");
        assert!(response.body.starts_with(EUROPE_PREFIX), "{accept}");
    }
}

#[tokio::test]
async fn txt_suffix_means_text() {
    let wt = worldtime().await;
    let response = raw_get(
        wt,
        "/api/timezone/Europe.txt",
        &[("Accept", "application/json")],
    )
    .await;
    assert_eq!(response.status, 200);
    assert!(is_text(&response));
    assert!(response.body.starts_with(EUROPE_PREFIX));

    let response = raw_get(wt, "/api/timezone.txt", &[]).await;
    assert!(is_text(&response));
    assert!(response.body.lines().any(|l| l == "Europe/Berlin"));
    assert!(response
        .body
        .lines()
        .any(|l| l == "America/Argentina/Buenos_Aires"));

    let response = raw_get(wt, "/api/timezone/Europe/Berlin.txt", &[]).await;
    assert_eq!(response.status, 200);
    assert!(is_text(&response));
    let keys: Vec<&str> = response
        .body
        .lines()
        .map(|l| {
            l.split_once(": ")
                .map_or(l.trim_end_matches(':'), |(k, _)| k)
        })
        .collect();
    assert_eq!(
        keys,
        [
            "abbreviation",
            "client_ip",
            "datetime",
            "day_of_week",
            "day_of_year",
            "dst",
            "dst_from",
            "dst_offset",
            "dst_until",
            "raw_offset",
            "timezone",
            "unixtime",
            "utc_datetime",
            "utc_offset",
            "week_number"
        ]
    );
    assert!(response.body.contains("\ntimezone: Europe/Berlin\n"));
    assert!(response.body.contains("\nclient_ip: 127.0.0.1\n"));
}

#[tokio::test]
async fn json_by_default_and_for_wildcards() {
    let wt = worldtime().await;
    for accept in [None, Some("*/*"), Some("application/json, text/plain")] {
        let headers: Vec<(&str, &str)> = accept.iter().map(|a| ("Accept", *a)).collect();
        let response = raw_get(wt, "/api/timezone/Europe", &headers).await;
        assert_eq!(response.status, 200);
        assert!(is_json(&response), "{accept:?}");
        let names: Vec<String> = serde_json::from_str(&response.body).unwrap();
        assert_eq!(
            names[..6],
            [
                "Europe/Amsterdam",
                "Europe/Andorra",
                "Europe/Astrakhan",
                "Europe/Athens",
                "Europe/Belgrade",
                "Europe/Berlin"
            ]
        );
        assert!(names.iter().all(|n| n.starts_with("Europe/")));
    }

    let response = raw_get(wt, "/api/timezone", &[]).await;
    assert!(is_json(&response));
    let all: Vec<String> = serde_json::from_str(&response.body).unwrap();
    assert_eq!(all, meshbox_apps::zone_names());
    for name in ["UTC", "EST", "Etc/UTC", "Europe/Berlin", "Asia/Tokyo"] {
        assert!(all.iter().any(|n| n == name), "{name}");
    }
}

#[tokio::test]
async fn zone_time_as_json() {
    let wt = worldtime().await;
    let before = chrono::Utc::now().timestamp();
    let response = raw_get(wt, "/api/timezone/Europe/Berlin", &[]).await;
    let after = chrono::Utc::now().timestamp();
    assert_eq!(response.status, 200);
    assert!(is_json(&response));

    // Fields in the real site's (alphabetical) order.
    let order = [
        "abbreviation",
        "client_ip",
        "datetime",
        "day_of_week",
        "day_of_year",
        "dst",
        "dst_from",
        "dst_offset",
        "dst_until",
        "raw_offset",
        "timezone",
        "unixtime",
        "utc_datetime",
        "utc_offset",
        "week_number",
    ];
    let positions: Vec<usize> = order
        .iter()
        .map(|k| response.body.find(&format!("\"{k}\":")).expect(k))
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "{}",
        response.body
    );

    let v: serde_json::Value = serde_json::from_str(&response.body).unwrap();
    assert_eq!(v["timezone"], "Europe/Berlin");
    assert_eq!(v["client_ip"], "127.0.0.1");
    assert_eq!(v["raw_offset"], 3600);
    let dst = v["dst"].as_bool().unwrap();
    let utc_offset = v["utc_offset"].as_str().unwrap();
    assert_eq!(utc_offset, if dst { "+02:00" } else { "+01:00" });
    assert_eq!(v["dst_offset"], if dst { 3600 } else { 0 });
    assert_eq!(v["abbreviation"], if dst { "CEST" } else { "CET" });
    assert_eq!(v["dst_from"].is_null(), !dst);
    let unixtime = v["unixtime"].as_i64().unwrap();
    assert!(before <= unixtime && unixtime <= after);

    let datetime = v["datetime"].as_str().unwrap();
    let parsed = chrono::DateTime::parse_from_rfc3339(datetime).unwrap();
    assert_eq!(parsed.timestamp(), unixtime);
    assert_eq!(datetime.len(), "2026-11-26T23:11:05.123456+01:00".len());
    assert!(datetime.ends_with(utc_offset));
    let utc = v["utc_datetime"].as_str().unwrap();
    assert!(utc.ends_with("+00:00"));
    assert_eq!(chrono::DateTime::parse_from_rfc3339(utc).unwrap(), parsed);
    assert!(v["day_of_week"].as_u64().unwrap() <= 6);
    assert!((1..=366).contains(&v["day_of_year"].as_u64().unwrap()));
    assert!((1..=53).contains(&v["week_number"].as_u64().unwrap()));

    // Three-segment and top-level zones.
    let response = raw_get(wt, "/api/timezone/America/Argentina/Buenos_Aires", &[]).await;
    assert_eq!(response.status, 200);
    let v: serde_json::Value = serde_json::from_str(&response.body).unwrap();
    assert_eq!(v["utc_offset"], "-03:00");
    let response = raw_get(wt, "/api/timezone/Etc/UTC", &[]).await;
    let v: serde_json::Value = serde_json::from_str(&response.body).unwrap();
    assert_eq!(v["abbreviation"], "UTC");
    assert_eq!(v["utc_offset"], "+00:00");
    let response = raw_get(wt, "/api/timezone/UTC", &[]).await;
    assert_eq!(response.status, 200);
}

#[tokio::test]
async fn unknown_locations_are_404() {
    let wt = worldtime().await;
    for path in [
        "/api/timezone/Europe/Nowhere",
        "/api/timezone/Atlantis",
        "/api/timezone/Europe/Berlin/Mitte/Kreuzberg",
    ] {
        let response = raw_get(wt, path, &[]).await;
        assert_eq!(response.status, 404, "{path}");
        assert!(is_json(&response));
        assert_eq!(response.body, r#"{"error":"unknown location"}"#);
    }
    let response = raw_get(
        wt,
        "/api/timezone/Europe/Nowhere",
        &[("Accept", "text/plain")],
    )
    .await;
    assert_eq!(response.status, 404);
    assert_eq!(response.body, "Error: unknown location\n");
    let response = raw_get(wt, "/api/timezone/Europe/Nowhere.txt", &[]).await;
    assert_eq!(response.status, 404);
    assert_eq!(response.body, "Error: unknown location\n");
    assert_eq!(raw_get(wt, "/", &[]).await.status, 404);
    assert_eq!(raw_get(wt, "/api/ip", &[]).await.status, 404);
}
