//! Fuzzes the query parser: no input may panic, whatever parses must print back to the same
//! tree, and evaluating a parsed condition or projecting a parsed query must not panic either.
#![no_main]

use fleetsim::query::{parse_condition, parse_query};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let twin = json!({
        "deviceId": "d1",
        "status": "enabled",
        "tags": {"building": "43", "floor": 2, "none": null},
        "properties": {"reported": {"temp": 21.5, "on": true, "fw": "1.0"}},
    });
    if let Ok(query) = parse_query(text) {
        assert_eq!(parse_query(&query.to_string()), Ok(query.clone()));
        let rows = [&twin]
            .into_iter()
            .filter(|d| query.condition().matches(*d));
        let _ = query.project(rows);
        let _ = query.condition().plan();
    }
    if let Ok(condition) = parse_condition(text) {
        assert_eq!(
            parse_condition(&condition.to_string()),
            Ok(condition.clone())
        );
        let _ = condition.matches(&twin);
        let _ = condition.plan();
    }
});
