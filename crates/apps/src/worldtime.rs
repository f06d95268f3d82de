//! A local stand-in for worldtimeapi.org, answering from the IANA database compiled into
//! chrono-tz.
//!
//! Routes, as on the real site:
//! - `/api/timezone`: every zone name;
//! - `/api/timezone/{area}`: the zone names under `{area}/` (404 when there is none; an
//!   area that is itself a zone, such as `UTC`, answers that zone's time);
//! - `/api/timezone/{area}/{location}[/{region}]`: the current time in that zone, 404
//!   `unknown location` otherwise.
//!
//! A `.txt` suffix on the last segment asks for text; otherwise the `Accept` header decides
//! (text when it prefers `text/plain` to `application/json`, JSON by default).

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::OnceLock;

use axum::extract::{ConnectInfo, Path};
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Datelike, Offset, TimeZone, Utc};
use chrono_tz::{OffsetComponents, OffsetName, Tz};
use serde::Serialize;
use tokio::net::TcpListener;

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";
const APPLICATION_JSON: &str = "application/json; charset=utf-8";

/// Backward-compatibility names (links) that chrono-tz compiles in but worldtimeapi.org
/// does not list.
///
/// chrono-tz 0.10 (tzdata 2025b) includes the whole `backward` file, so its names include
/// e.g. `Europe/Belfast`, which would sort between `Europe/Athens` and `Europe/Belgrade`
/// and break the list the course prints (`Europe/Amsterdam`, `Europe/Andorra`,
/// `Europe/Astrakhan`, `Europe/Athens`, `Europe/Belgrade`, `Europe/Berlin`, ...). The real
/// site lists one name per location, as `zone.tab` does. chrono-tz does not say which names
/// are links, so this list was generated from chrono-tz's `tz/backward`: every `Link` name
/// except those of the section "Pre-2013 practice, which typically had a Zone per zone.tab
/// line" (those are zone.tab locations such as `Europe/Amsterdam` or `Europe/Bratislava`,
/// which the real site lists) and except the classic top-level zones the real site lists
/// (`CET`, `CST6CDT`, `EET`, `EST`, `EST5EDT`, `HST`, `MET`, `MST`, `MST7MDT`, `PST8PDT`,
/// `WET`, `GMT`, `UTC`), which became links only in tzdata 2024b. Excluded names still
/// answer their time; they are only left out of the lists.
const LEGACY_ALIASES: &[&str] = &[
    "Africa/Asmera",
    "Africa/Timbuktu",
    "America/Argentina/ComodRivadavia",
    "America/Atka",
    "America/Buenos_Aires",
    "America/Catamarca",
    "America/Coral_Harbour",
    "America/Cordoba",
    "America/Ensenada",
    "America/Fort_Wayne",
    "America/Godthab",
    "America/Indianapolis",
    "America/Jujuy",
    "America/Knox_IN",
    "America/Louisville",
    "America/Mendoza",
    "America/Montreal",
    "America/Nipigon",
    "America/Pangnirtung",
    "America/Porto_Acre",
    "America/Rainy_River",
    "America/Rosario",
    "America/Santa_Isabel",
    "America/Shiprock",
    "America/Thunder_Bay",
    "America/Virgin",
    "America/Yellowknife",
    "Antarctica/South_Pole",
    "Asia/Ashkhabad",
    "Asia/Calcutta",
    "Asia/Choibalsan",
    "Asia/Chongqing",
    "Asia/Chungking",
    "Asia/Dacca",
    "Asia/Harbin",
    "Asia/Istanbul",
    "Asia/Kashgar",
    "Asia/Katmandu",
    "Asia/Macao",
    "Asia/Rangoon",
    "Asia/Saigon",
    "Asia/Tel_Aviv",
    "Asia/Thimbu",
    "Asia/Ujung_Pandang",
    "Asia/Ulan_Bator",
    "Atlantic/Faeroe",
    "Atlantic/Jan_Mayen",
    "Australia/ACT",
    "Australia/Canberra",
    "Australia/Currie",
    "Australia/LHI",
    "Australia/NSW",
    "Australia/North",
    "Australia/Queensland",
    "Australia/South",
    "Australia/Tasmania",
    "Australia/Victoria",
    "Australia/West",
    "Australia/Yancowinna",
    "Brazil/Acre",
    "Brazil/DeNoronha",
    "Brazil/East",
    "Brazil/West",
    "Canada/Atlantic",
    "Canada/Central",
    "Canada/Eastern",
    "Canada/Mountain",
    "Canada/Newfoundland",
    "Canada/Pacific",
    "Canada/Saskatchewan",
    "Canada/Yukon",
    "Chile/Continental",
    "Chile/EasterIsland",
    "Cuba",
    "Egypt",
    "Eire",
    "Etc/GMT+0",
    "Etc/GMT-0",
    "Etc/GMT0",
    "Etc/Greenwich",
    "Etc/UCT",
    "Etc/Universal",
    "Etc/Zulu",
    "Europe/Belfast",
    "Europe/Kiev",
    "Europe/Nicosia",
    "Europe/Tiraspol",
    "Europe/Uzhgorod",
    "Europe/Zaporozhye",
    "GB",
    "GB-Eire",
    "GMT+0",
    "GMT-0",
    "GMT0",
    "Greenwich",
    "Hongkong",
    "Iceland",
    "Iran",
    "Israel",
    "Jamaica",
    "Japan",
    "Kwajalein",
    "Libya",
    "Mexico/BajaNorte",
    "Mexico/BajaSur",
    "Mexico/General",
    "NZ",
    "NZ-CHAT",
    "Navajo",
    "PRC",
    "Pacific/Enderbury",
    "Pacific/Johnston",
    "Pacific/Ponape",
    "Pacific/Samoa",
    "Pacific/Truk",
    "Pacific/Yap",
    "Poland",
    "Portugal",
    "ROC",
    "ROK",
    "Singapore",
    "Turkey",
    "UCT",
    "US/Alaska",
    "US/Aleutian",
    "US/Arizona",
    "US/Central",
    "US/East-Indiana",
    "US/Eastern",
    "US/Hawaii",
    "US/Indiana-Starke",
    "US/Michigan",
    "US/Mountain",
    "US/Pacific",
    "US/Samoa",
    "Universal",
    "W-SU",
    "Zulu",
];

/// The zone names the stand-in lists under `/api/timezone`, sorted: chrono-tz's names
/// without the legacy aliases (see the comment on `LEGACY_ALIASES` in the source).
pub fn zone_names() -> &'static [&'static str] {
    static NAMES: OnceLock<Vec<&'static str>> = OnceLock::new();
    NAMES.get_or_init(|| {
        let mut names: Vec<&'static str> = chrono_tz::TZ_VARIANTS
            .iter()
            .map(|tz| tz.name())
            .filter(|name| !LEGACY_ALIASES.contains(name))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    })
}

pub(crate) async fn serve(listener: TcpListener) -> anyhow::Result<()> {
    axum::serve(
        listener,
        router().into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}

fn router() -> Router {
    Router::new()
        .route("/api/timezone", get(all_zones))
        .route("/api/timezone.txt", get(all_zones_text))
        .route("/api/timezone/{*path}", get(by_path))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Text,
}

async fn all_zones(headers: HeaderMap) -> Response {
    list_response(zone_names(), negotiate(&headers))
}

async fn all_zones_text() -> Response {
    list_response(zone_names(), Format::Text)
}

async fn by_path(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(path): Path<String>,
) -> Response {
    let (path, format) = match path.strip_suffix(".txt") {
        Some(stripped) => (stripped, Format::Text),
        None => (path.as_str(), negotiate(&headers)),
    };
    let segments: Vec<&str> = path.split('/').collect();
    if segments.is_empty() || segments.len() > 3 || segments.iter().any(|s| s.is_empty()) {
        return unknown_location(format);
    }
    if let [area] = segments.as_slice() {
        let prefix = format!("{area}/");
        let names: Vec<&str> = zone_names()
            .iter()
            .copied()
            .filter(|name| name.starts_with(&prefix))
            .collect();
        if !names.is_empty() {
            return list_response(&names, format);
        }
    }
    match Tz::from_str(path) {
        Ok(tz) => {
            let info = time_info(tz, Utc::now(), peer.ip().to_canonical().to_string());
            time_response(&info, format)
        }
        Err(_) => unknown_location(format),
    }
}

fn respond(status: StatusCode, format: Format, body: String) -> Response {
    let content_type = match format {
        Format::Json => APPLICATION_JSON,
        Format::Text => TEXT_PLAIN,
    };
    (status, [(CONTENT_TYPE, content_type)], body).into_response()
}

fn list_response(names: &[&str], format: Format) -> Response {
    let body = match format {
        Format::Text => names.iter().map(|n| format!("{n}\n")).collect(),
        Format::Json => json(&names),
    };
    respond(StatusCode::OK, format, body)
}

fn unknown_location(format: Format) -> Response {
    let body = match format {
        Format::Text => "Error: unknown location\n".to_string(),
        Format::Json => json(&serde_json::json!({ "error": "unknown location" })),
    };
    respond(StatusCode::NOT_FOUND, format, body)
}

fn json<T: Serialize + ?Sized>(value: &T) -> String {
    // Serializing strings, numbers and options cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

/// The answer for one zone, fields in the real site's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct TimeInfo {
    abbreviation: String,
    client_ip: String,
    datetime: String,
    day_of_week: u32,
    day_of_year: u32,
    dst: bool,
    dst_from: Option<String>,
    dst_offset: i64,
    dst_until: Option<String>,
    raw_offset: i64,
    timezone: String,
    unixtime: i64,
    utc_datetime: String,
    utc_offset: String,
    week_number: u32,
}

impl TimeInfo {
    fn to_text(&self) -> String {
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        let lines = [
            ("abbreviation", self.abbreviation.clone()),
            ("client_ip", self.client_ip.clone()),
            ("datetime", self.datetime.clone()),
            ("day_of_week", self.day_of_week.to_string()),
            ("day_of_year", self.day_of_year.to_string()),
            ("dst", self.dst.to_string()),
            ("dst_from", opt(&self.dst_from)),
            ("dst_offset", self.dst_offset.to_string()),
            ("dst_until", opt(&self.dst_until)),
            ("raw_offset", self.raw_offset.to_string()),
            ("timezone", self.timezone.clone()),
            ("unixtime", self.unixtime.to_string()),
            ("utc_datetime", self.utc_datetime.clone()),
            ("utc_offset", self.utc_offset.clone()),
            ("week_number", self.week_number.to_string()),
        ];
        lines
            .iter()
            .map(|(key, value)| format!("{key}: {value}\n"))
            .collect()
    }
}

fn time_response(info: &TimeInfo, format: Format) -> Response {
    let body = match format {
        Format::Text => info.to_text(),
        Format::Json => json(info),
    };
    respond(StatusCode::OK, format, body)
}

fn time_info(tz: Tz, now: DateTime<Utc>, client_ip: String) -> TimeInfo {
    let local = now.with_timezone(&tz);
    let offset = *local.offset();
    let dst_offset = offset.dst_offset().num_seconds();
    let dst = dst_offset != 0;
    let (dst_from, dst_until) = if dst {
        let (from, until) = dst_period(tz, now);
        (from.map(utc_seconds), until.map(utc_seconds))
    } else {
        (None, None)
    };
    TimeInfo {
        abbreviation: match offset.abbreviation() {
            Some(abbreviation) if !abbreviation.is_empty() => abbreviation.to_string(),
            _ => numeric_abbreviation(offset.fix().local_minus_utc()),
        },
        client_ip,
        datetime: local.format("%Y-%m-%dT%H:%M:%S%.6f%:z").to_string(),
        day_of_week: local.weekday().num_days_from_sunday(),
        day_of_year: local.ordinal(),
        dst,
        dst_from,
        dst_offset,
        dst_until,
        raw_offset: offset.base_utc_offset().num_seconds(),
        timezone: tz.name().to_string(),
        unixtime: now.timestamp(),
        utc_datetime: now.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string(),
        utc_offset: local.format("%:z").to_string(),
        week_number: local.iso_week().week(),
    }
}

/// tzdata's `%z` abbreviation (`+04`, `+0530`, `-03`), which chrono-tz reports as none.
fn numeric_abbreviation(offset_secs: i32) -> String {
    let sign = if offset_secs < 0 { '-' } else { '+' };
    let minutes = offset_secs.unsigned_abs() / 60;
    let (h, m) = (minutes / 60, minutes % 60);
    if m == 0 {
        format!("{sign}{h:02}")
    } else {
        format!("{sign}{h:02}{m:02}")
    }
}

fn utc_seconds(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
}

/// The period around `now` during which `tz` keeps its current offsets: its first second
/// and the first second after it, each `None` if not found within about a year.
fn dst_period(tz: Tz, now: DateTime<Utc>) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let offsets = |secs: i64| {
        DateTime::from_timestamp(secs, 0).map(|t| {
            let o = tz.offset_from_utc_datetime(&t.naive_utc());
            (o.base_utc_offset(), o.dst_offset())
        })
    };
    let start = now.timestamp();
    let current = offsets(start);
    let same = |secs: i64| offsets(secs) == current;
    const DAY: i64 = 86_400;
    // Walk a day at a time to the first day outside the period, then bisect to the second.
    let edge = |step: i64| -> Option<i64> {
        let mut inside = start;
        for _ in 0..400 {
            let outside = inside.checked_add(step)?;
            if !same(outside) {
                let (mut lo, mut hi) = (inside, outside);
                while (hi - lo).abs() > 1 {
                    let mid = lo + (hi - lo) / 2;
                    if same(mid) {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }
                // Backwards, the period starts at the last inside second; forwards, it ends
                // at the first outside second.
                return Some(if step < 0 { lo } else { hi });
            }
            inside = outside;
        }
        None
    };
    let from = edge(-DAY).and_then(|s| DateTime::from_timestamp(s, 0));
    let until = edge(DAY).and_then(|s| DateTime::from_timestamp(s, 0));
    (from, until)
}

/// Text when the `Accept` header prefers `text/plain` to `application/json`, by q value,
/// then by how specifically each is named, then by which comes first; JSON otherwise.
fn negotiate(headers: &HeaderMap) -> Format {
    let accept: Vec<&str> = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if prefers_text(&accept.join(",")) {
        Format::Text
    } else {
        Format::Json
    }
}

/// How an Accept header ranks one media type: (q, specificity, position of the range).
fn rank(accept: &str, kind: &str, subtype: &str) -> Option<(f32, u8, usize)> {
    let mut best: Option<(f32, u8, usize)> = None;
    for (position, item) in accept.split(',').enumerate() {
        let mut parts = item.split(';');
        let range = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let Some((r_kind, r_sub)) = range.split_once('/') else {
            continue;
        };
        let specificity = match (r_kind.trim(), r_sub.trim()) {
            (k, s) if k == kind && s == subtype => 2,
            (k, "*") if k == kind => 1,
            ("*", "*") => 0,
            _ => continue,
        };
        let q = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .and_then(|(_, v)| v.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if best.is_none_or(|(_, s, _)| specificity > s) {
            best = Some((q, specificity, position));
        }
    }
    best
}

fn prefers_text(accept: &str) -> bool {
    let Some((text_q, text_spec, text_pos)) = rank(accept, "text", "plain") else {
        return false;
    };
    if text_q <= 0.0 {
        return false;
    }
    let Some((json_q, json_spec, json_pos)) = rank(accept, "application", "json") else {
        return true;
    };
    if text_q != json_q {
        return text_q > json_q;
    }
    if text_spec != json_spec {
        return text_spec > json_spec;
    }
    text_spec > 0 && text_pos < json_pos
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        assert!(!prefers_text(""));
        assert!(!prefers_text("*/*"));
        assert!(prefers_text(
            "text/plain, application/json, application/*+json, */*"
        ));
        assert!(!prefers_text("application/json, text/plain"));
        assert!(prefers_text("text/*"));
        assert!(prefers_text("text/plain"));
        assert!(!prefers_text("application/json"));
        assert!(!prefers_text("text/plain;q=0.5, application/json"));
        assert!(prefers_text("application/json;q=0.8, text/plain"));
        assert!(prefers_text("text/plain, */*;q=0.1"));
        assert!(!prefers_text("text/plain;q=0, */*"));
        assert!(prefers_text("text/plain, application/*"));
        assert!(!prefers_text("text/html, */*"));
    }

    #[test]
    fn legacy_aliases_are_real_chrono_tz_names() {
        for alias in LEGACY_ALIASES {
            assert!(
                Tz::from_str(alias).is_ok(),
                "{alias} is not a chrono-tz name"
            );
        }
        let names = zone_names();
        assert!(names.windows(2).all(|w| w[0] < w[1]));
        for kept in [
            "UTC",
            "EST",
            "CET",
            "Etc/UTC",
            "Europe/Amsterdam",
            "Europe/Kyiv",
        ] {
            assert!(names.contains(&kept), "{kept} missing");
        }
        for gone in [
            "Europe/Belfast",
            "Europe/Kiev",
            "GB",
            "US/Eastern",
            "Etc/Zulu",
        ] {
            assert!(!names.contains(&gone), "{gone} listed");
        }
    }

    #[test]
    fn time_in_summer_and_winter() {
        let summer = DateTime::parse_from_rfc3339("2026-07-01T10:00:00.123456Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap();
        let info = time_info(chrono_tz::Europe::Berlin, summer, "10.0.0.1".into());
        assert_eq!(info.datetime, "2026-07-01T12:00:00.123456+02:00");
        assert_eq!(info.utc_datetime, "2026-07-01T10:00:00.123456+00:00");
        assert_eq!(info.abbreviation, "CEST");
        assert!(info.dst);
        assert_eq!(info.dst_offset, 3600);
        assert_eq!(info.raw_offset, 3600);
        assert_eq!(info.utc_offset, "+02:00");
        assert_eq!(info.dst_from.as_deref(), Some("2026-03-29T01:00:00+00:00"));
        assert_eq!(info.dst_until.as_deref(), Some("2026-10-25T01:00:00+00:00"));
        assert_eq!(info.day_of_week, 3);
        assert_eq!(info.day_of_year, 182);
        assert_eq!(info.week_number, 27);
        assert_eq!(info.unixtime, summer.timestamp());

        let winter = DateTime::parse_from_rfc3339("2026-11-26T22:11:05.123456Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap();
        let info = time_info(chrono_tz::Europe::Berlin, winter, "10.0.0.1".into());
        assert_eq!(info.datetime, "2026-11-26T23:11:05.123456+01:00");
        assert!(!info.dst);
        assert_eq!(info.dst_from, None);
        assert_eq!(info.dst_offset, 0);
        assert_eq!(info.abbreviation, "CET");
        let text = info.to_text();
        assert!(text.starts_with("abbreviation: CET\nclient_ip: 10.0.0.1\n"));
        assert!(text.contains("\ndst_from: \n"));
        assert!(text.ends_with("week_number: 48\n"));

        let info = time_info(chrono_tz::Asia::Dubai, winter, String::new());
        assert_eq!(info.abbreviation, "+04");
        let info = time_info(chrono_tz::Asia::Kolkata, winter, String::new());
        assert_eq!(info.abbreviation, "IST");
        let info = time_info(chrono_tz::America::Sao_Paulo, winter, String::new());
        assert_eq!(info.abbreviation, "-03");
        assert_eq!(numeric_abbreviation(19_800), "+0530");
        assert_eq!(numeric_abbreviation(-34_200), "-0930");
    }
}
