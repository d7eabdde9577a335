//! Table-driven tests over a fixed fleet, exact error messages, and index plans.

use serde_json::{json, Value};

use super::{parse_condition, parse_query, Document, Plan, Source};

fn twin(
    id: &str,
    status: &str,
    conn: &str,
    tags: Option<Value>,
    desired: Value,
    reported: Value,
) -> Value {
    let mut twin = json!({
        "deviceId": id,
        "status": status,
        "connectionState": conn,
        "properties": { "desired": desired, "reported": reported },
    });
    if let Some(tags) = tags {
        twin["tags"] = tags;
    }
    twin
}

fn fleet() -> Vec<Value> {
    vec![
        twin(
            "d01",
            "enabled",
            "Connected",
            Some(
                json!({"building": "43", "floor": 1, "location": {"region": "US", "city": "Redmond"}}),
            ),
            json!({"interval": 30, "mode": "eco"}),
            json!({"firmware": "1.0", "temp": 21.5, "enabled": true, "battery": 80}),
        ),
        twin(
            "d02",
            "enabled",
            "Disconnected",
            Some(json!({"building": "43", "floor": 2, "location": {"region": "US"}})),
            json!({"interval": 30}),
            json!({"firmware": "1.1", "temp": 25, "enabled": false, "battery": null}),
        ),
        twin(
            "d03",
            "disabled",
            "Connected",
            Some(json!({"building": "44", "floor": -1, "location": {"region": "EU"}})),
            json!({}),
            json!({"firmware": "1.0", "temp": "hot", "enabled": true}),
        ),
        twin(
            "d04",
            "enabled",
            "Connected",
            Some(json!({})),
            json!({"interval": 60}),
            json!({"firmware": "2.0", "temp": 30, "battery": 15}),
        ),
        twin(
            "d05",
            "enabled",
            "Disconnected",
            None,
            json!({"mode": null}),
            json!({"firmware": "1.1", "battery": 50, "note": "it's \"q\" \\ café"}),
        ),
        twin(
            "d06",
            "enabled",
            "Connected",
            Some(json!({"building": "43", "owner": "O'Brien"})),
            json!({}),
            json!({"firmware": null, "temp": 19}),
        ),
        twin(
            "d07",
            "disabled",
            "Disconnected",
            Some(json!({"floor": 16})),
            json!({}),
            json!({"firmware": "2.0", "count": 255, "temp": 22}),
        ),
        twin(
            "d08",
            "disabled",
            "Connected",
            Some(json!({"building": null})),
            json!({}),
            json!({}),
        ),
        twin(
            "d09",
            "enabled",
            "Connected",
            Some(json!({"building": "45"})),
            json!({}),
            json!({"temp": -5.5, "firmware": "1.0"}),
        ),
        twin(
            "d10",
            "enabled",
            "Disconnected",
            Some(json!({"building": "44", "mode": "ECO"})),
            json!({}),
            json!({"firmware": "1.0", "temp": 0, "enabled": "true"}),
        ),
    ]
}

fn job_records() -> Vec<Value> {
    vec![
        json!({"deviceId": "d01", "jobId": "j1", "jobType": "scheduleDeviceMethod", "status": "completed",
               "outcome": {"deviceMethodResponse": {"status": 200, "payload": null}}}),
        json!({"deviceId": "d02", "jobId": "j1", "jobType": "scheduleDeviceMethod", "status": "failed",
               "error": {"code": "DeviceNotOnline"}}),
        json!({"deviceId": "d01", "jobId": "j2", "jobType": "scheduleUpdateTwin", "status": "running"}),
    ]
}

/// Every operator, precedence level and value rule, with the exact devices selected.
const CONDITIONS: &[(&str, &[&str])] = &[
    (
        "*",
        &[
            "d01", "d02", "d03", "d04", "d05", "d06", "d07", "d08", "d09", "d10",
        ],
    ),
    (
        "status = 'enabled'",
        &["d01", "d02", "d04", "d05", "d06", "d09", "d10"],
    ),
    ("status != 'enabled'", &["d03", "d07", "d08"]),
    (
        "status <> \"disabled\"",
        &["d01", "d02", "d04", "d05", "d06", "d09", "d10"],
    ),
    ("tags.building = '43'", &["d01", "d02", "d06"]),
    // A number never equals a string.
    ("tags.building = 43", &[]),
    // Null and missing buildings are not "different from '43'": they are undefined.
    ("tags.building != '43'", &["d03", "d09", "d10"]),
    ("tags.building = null", &["d08"]),
    ("tags.building != null", &[]),
    ("tags.building > null", &[]),
    (
        "IS_DEFINED(tags.building)",
        &["d01", "d02", "d03", "d06", "d08", "d09", "d10"],
    ),
    ("NOT IS_DEFINED(tags.building)", &["d04", "d05", "d07"]),
    (
        "properties.reported.temp > 20",
        &["d01", "d02", "d04", "d07"],
    ),
    (
        "properties.reported.temp >= 19 AND properties.reported.temp <= 22",
        &["d01", "d06", "d07"],
    ),
    ("properties.reported.temp < -5", &["d09"]),
    ("properties.reported.temp = -5.5", &["d09"]),
    ("tags.floor = 0x10", &["d07"]),
    ("tags.floor = 1.0", &["d01"]),
    ("-tags.floor = 1", &["d03"]),
    ("tags.floor IN [1, 2, 0X10]", &["d01", "d02", "d07"]),
    ("tags.floor NIN [1, 2]", &["d03", "d07"]),
    ("tags.building IN [43, '44', null]", &["d03", "d08", "d10"]),
    ("deviceId IN ['d01', 'd05', 'nope']", &["d01", "d05"]),
    (
        "properties.reported.firmware NIN ['1.0', '1.1']",
        &["d04", "d06", "d07"],
    ),
    ("properties.reported.firmware = null", &["d06"]),
    (
        "properties.reported.firmware >= '1.1'",
        &["d02", "d04", "d05", "d07"],
    ),
    (
        "IS_DEFINED(properties.reported.firmware)",
        &[
            "d01", "d02", "d03", "d04", "d05", "d06", "d07", "d09", "d10",
        ],
    ),
    (
        "IS_DEFINED(properties.reported.battery)",
        &["d01", "d02", "d04", "d05"],
    ),
    (
        "properties.reported.battery < 20 OR properties.reported.battery = null",
        &["d02", "d04"],
    ),
    // AND binds tighter than OR.
    (
        "status = 'disabled' OR connectionState = 'Connected' AND tags.building = '43'",
        &["d01", "d03", "d06", "d07", "d08"],
    ),
    (
        "(status = 'disabled' OR connectionState = 'Connected') AND tags.building = '43'",
        &["d01", "d06"],
    ),
    ("NOT status = 'enabled'", &["d03", "d07", "d08"]),
    // NOT of undefined stays undefined.
    ("NOT tags.building = '43'", &["d03", "d09", "d10"]),
    // NOT binds tighter than AND.
    (
        "NOT status = 'enabled' AND connectionState = 'Connected'",
        &["d03", "d08"],
    ),
    (
        "NOT (status = 'enabled' AND connectionState = 'Connected')",
        &["d02", "d03", "d05", "d07", "d08", "d10"],
    ),
    // * binds tighter than +, and - is left-associative.
    ("properties.reported.temp * 2 + 1 > 50", &["d02", "d04"]),
    ("properties.reported.temp - 20 - 5 = 0", &["d02"]),
    ("properties.reported.count % 16 = 15", &["d07"]),
    ("properties.desired.interval / 30 = 2", &["d04"]),
    (
        "properties.reported.count / 0 = 1 OR properties.reported.count / 0 != 1",
        &[],
    ),
    // Arithmetic on a string is undefined.
    (
        "properties.reported.temp + 1 > 0",
        &["d01", "d02", "d04", "d06", "d07", "d10"],
    ),
    ("tags.owner = 'O\\'Brien'", &["d06"]),
    ("tags.owner = \"O'Brien\"", &["d06"]),
    (
        "properties.reported.note = 'it\\'s \\\"q\\\" \\\\ caf\\u00e9'",
        &["d05"],
    ),
    (
        "status = 'enabled' and NOT tags.building In ['43'] or deviceId = 'd08'",
        &["d08", "d09", "d10"],
    ),
    ("tags.mode = 'eco'", &[]),
    ("tags.mode = 'ECO'", &["d10"]),
    ("properties.reported.enabled = true", &["d01", "d03"]),
    ("properties.reported.enabled != TRUE", &["d02"]),
    ("properties.reported.enabled", &["d01", "d03"]),
    ("properties.desired.mode = NULL", &["d05"]),
    ("IS_DEFINED(properties.desired.mode)", &["d01", "d05"]),
    // d05's null mode is not "different from 'eco'"; d01's is equal.
    ("properties.desired.mode != 'eco'", &[]),
    (
        "tags.location.region = 'US' AND tags.location.city = 'Redmond'",
        &["d01"],
    ),
    ("tags.location = 'US'", &[]),
    ("1 = 1 AND false", &[]),
    ("false OR deviceId = 'd04'", &["d04"]),
];

fn ids(docs: &[&Value]) -> Vec<String> {
    docs.iter()
        .map(|d| d["deviceId"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn conditions_select_exactly_the_expected_devices() {
    let fleet = fleet();
    for (text, expected) in CONDITIONS {
        let condition = parse_condition(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let selected: Vec<&Value> = fleet.iter().filter(|d| condition.matches(*d)).collect();
        assert_eq!(ids(&selected), *expected, "condition: {text}");
    }
}

#[test]
fn printed_conditions_parse_back_and_select_the_same() {
    for (text, _) in CONDITIONS {
        let condition = parse_condition(text).unwrap();
        let printed = condition.to_string();
        assert_eq!(
            parse_condition(&printed).unwrap(),
            condition,
            "{text} printed as {printed}"
        );
    }
}

#[test]
fn plans_never_miss_a_match() {
    let fleet = fleet();
    for (text, _) in CONDITIONS {
        let condition = parse_condition(text).unwrap();
        for doc in fleet.iter().filter(|d| condition.matches(*d)) {
            match condition.plan() {
                Plan::All => {}
                Plan::DeviceIds(list) => {
                    assert!(list.iter().any(|id| doc["deviceId"] == **id), "{text}")
                }
                Plan::Equals { path, value } => {
                    let path: Vec<&str> = path.iter().map(String::as_str).collect();
                    assert_eq!(doc.resolve(&path).as_deref(), Some(&value), "{text}");
                }
            }
        }
    }
}

#[test]
fn plans_pick_device_ids_then_equality() {
    let plan = |text: &str| parse_condition(text).unwrap().plan();
    let equals = |path: &[&str], value: Value| Plan::Equals {
        path: path.iter().map(|s| s.to_string()).collect(),
        value,
    };
    assert_eq!(
        plan("status = 'enabled' AND deviceId = 'd01'"),
        Plan::DeviceIds(vec!["d01".into()])
    );
    assert_eq!(
        plan("tags.building = '43' AND deviceId IN ['a', 'b']"),
        Plan::DeviceIds(vec!["a".into(), "b".into()])
    );
    assert_eq!(
        plan("properties.reported.temp > 20 AND '43' = tags.building"),
        equals(&["tags", "building"], json!("43"))
    );
    assert_eq!(
        plan("tags.x = null AND status = 'on'"),
        equals(&["tags", "x"], Value::Null)
    );
    assert_eq!(plan("deviceId IN ['a', 5]"), Plan::All);
    assert_eq!(plan("deviceId = 'a' OR status = 'on'"), Plan::All);
    assert_eq!(plan("NOT deviceId = 'a'"), Plan::All);
    assert_eq!(plan("deviceId NIN ['a']"), Plan::All);
    assert_eq!(plan("properties.reported.battery = 15"), Plan::All);
    assert_eq!(plan("*"), Plan::All);
}

fn run(text: &str) -> Vec<Value> {
    let query = parse_query(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    let docs = match query.source() {
        Source::Devices => fleet(),
        Source::DeviceJobs => job_records(),
    };
    let selected: Vec<&Value> = docs
        .iter()
        .filter(|d| query.condition().matches(*d))
        .collect();
    let rows = query.project(selected);
    assert_eq!(
        parse_query(&query.to_string()).unwrap(),
        query,
        "{text} printed as {query}"
    );
    rows
}

#[test]
fn queries_give_exactly_the_expected_rows() {
    let fleet = fleet();
    let jobs = job_records();
    let cases: Vec<(&str, Value)> = vec![
        ("SELECT * FROM devices WHERE deviceId = 'd05'", json!([fleet[4]])),
        ("select * from DEVICES where deviceId IN ['d09', 'd10']", json!([fleet[8], fleet[9]])),
        ("SELECT TOP 2 deviceId FROM devices WHERE status = 'enabled'",
            json!([{"deviceId": "d01"}, {"deviceId": "d02"}])),
        ("SELECT TOP 0 * FROM devices", json!([])),
        ("SELECT deviceId AS id, properties.reported.temp AS t, tags.location FROM devices WHERE tags.building = '43'",
            json!([
                {"id": "d01", "t": 21.5, "location": {"region": "US", "city": "Redmond"}},
                {"id": "d02", "t": 25, "location": {"region": "US"}},
                {"id": "d06", "t": 19},
            ])),
        ("SELECT properties.reported.temp * 2 AS double, deviceId, 1 + 1 FROM devices WHERE deviceId IN ['d01', 'd03']",
            json!([{"double": 43, "deviceId": "d01", "$1": 2}, {"deviceId": "d03", "$1": 2}])),
        ("SELECT properties.reported.firmware AS fw, COUNT() AS n FROM devices GROUP BY properties.reported.firmware",
            json!([
                {"fw": "1.0", "n": 4}, {"fw": "1.1", "n": 2}, {"fw": "2.0", "n": 2}, {"fw": null, "n": 1}, {"n": 1},
            ])),
        ("SELECT COUNT() AS total FROM devices WHERE connectionState = 'Connected'", json!([{"total": 6}])),
        ("SELECT COUNT() FROM devices WHERE deviceId = 'none'", json!([{"$1": 0}])),
        ("SELECT TOP 1 status, connectionState, COUNT() AS n FROM devices GROUP BY status, connectionState",
            json!([{"status": "enabled", "connectionState": "Connected", "n": 4}])),
        ("SELECT COUNT() AS n FROM devices WHERE status = 'disabled' GROUP BY connectionState",
            json!([{"n": 2}, {"n": 1}])),
        ("SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'j1'", json!([jobs[0], jobs[1]])),
        ("SELECT deviceId, devices.jobs.status FROM devices.jobs WHERE jobId = 'j1' AND devices.jobs.outcome.deviceMethodResponse.status = 200",
            json!([{"deviceId": "d01", "status": "completed"}])),
        ("SELECT devices.jobs.status AS s, COUNT() AS n FROM devices.jobs WHERE deviceId = 'd01' GROUP BY status",
            json!([{"s": "completed", "n": 1}, {"s": "running", "n": 1}])),
    ];
    for (text, expected) in cases {
        assert_eq!(Value::Array(run(text)), expected, "query: {text}");
    }
}

#[test]
fn job_prefix_is_the_records_own_field() {
    let long = parse_query("SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'j1'").unwrap();
    let short = parse_query("SELECT * FROM devices.jobs WHERE jobId = 'j1'").unwrap();
    assert_eq!(long, short);
    assert_eq!(long.source(), Source::DeviceJobs);
    assert_eq!(
        long.to_string(),
        "SELECT * FROM devices.jobs WHERE jobId = 'j1'"
    );
}

#[test]
fn canonical_text() {
    let cases = [
        ("select top 5 properties.reported.firmware as fw, count() as n from devices where a=1 and not (b<>2 or c in ['x',\"y\"]) group by properties.reported.firmware",
            "SELECT TOP 5 properties.reported.firmware AS fw, COUNT() AS n FROM devices WHERE a = 1 AND NOT (b != 2 OR c IN ['x', 'y']) GROUP BY properties.reported.firmware"),
        ("select * from devices where (a - (b - c)) * -x = -0x1F", "SELECT * FROM devices WHERE (a - (b - c)) * -x = -31"),
        ("select * from devices where - (5) = a % 2.50", "SELECT * FROM devices WHERE -(5) = a % 2.5"),
        ("select * from devices where s = 'it\\'s \\u0001'", "SELECT * FROM devices WHERE s = 'it\\'s \\u0001'"),
    ];
    for (text, canonical) in cases {
        assert_eq!(parse_query(text).unwrap().to_string(), canonical);
    }
    assert_eq!(parse_condition(" * ").unwrap().to_string(), "*");
}

#[test]
fn errors_name_the_place_what_was_found_and_what_was_expected() {
    let condition_errors = [
        (
            "tags.location.x =",
            "expected a value after '=' at 1:18, found end of input",
        ),
        (
            "SELECT * FROM devices",
            "a job's queryCondition is the WHERE part only; found a SELECT query at 1:1",
        ),
        (
            "status = 'a' b",
            "expected AND, OR or end of input at 1:14, found 'b'",
        ),
        (
            "x IN 'a'",
            "expected an array like ['a', 'b'] after IN at 1:6, found string 'a'",
        ),
        (
            "x NIN ['a', b]",
            "expected a constant in the NIN array at 1:13, found 'b'",
        ),
        (
            "tags.x = 'a\\qb'",
            "expected an escape (\\' \\\" \\\\ or \\uXXXX) after '\\' at 1:13, found 'q'",
        ),
        (
            "status # 1",
            "expected a name, value, operator or punctuation at 1:8, found '#'",
        ),
        (
            "(a = 1",
            "expected ')' to close the '(' from 1:1 at 1:7, found end of input",
        ),
        ("", "expected a condition or * at 1:1, found end of input"),
        (
            "* AND a = 1",
            "expected end of input after '*' at 1:3, found 'AND'",
        ),
        ("tags. = 1", "expected a name after '.' at 1:7, found '='"),
        (
            "x = 0xg",
            "expected a hexadecimal digit after '0x' at 1:7, found 'g'",
        ),
        (
            "x = 1 AND OR",
            "expected a condition after AND at 1:11, found 'OR'",
        ),
        (
            "x = '\\uD800'",
            "a \\u escape names half of a surrogate pair without its other half at 1:7",
        ),
        (
            &format!("x = 1{}", "0".repeat(400)),
            "number is too large at 1:5",
        ),
    ];
    for (text, message) in condition_errors {
        assert_eq!(
            parse_condition(text).unwrap_err().to_string(),
            message,
            "condition: {text}"
        );
    }
    let query_errors = [
        ("SELECT * FROM devices WHERE status = 'on' AND", "expected a condition after AND at 1:46, found end of input"),
        ("SELECT *\nFROM devices\nWHERE tags.x = 'abc", "expected a closing ' for the string from 3:16 at 3:20, found end of input"),
        ("SELECT TOP 1.5 * FROM devices", "TOP needs a whole number from 0 to 9007199254740992, found 1.5 at 1:12"),
        ("SELECT deviceId, COUNT() FROM devices GROUP BY status",
            "'deviceId' is neither COUNT() nor a GROUP BY path, so it has no single value per group at 1:8"),
        ("SELECT * FROM devices GROUP BY status", "SELECT * cannot be grouped; select the GROUP BY paths and COUNT() at 1:8"),
        ("SELECT * FROM things", "expected devices or devices.jobs after FROM at 1:15, found 'things'"),
        ("SELECT * FROM devices.twins", "expected jobs after 'devices.' at 1:23, found 'twins'"),
        ("SELECT deviceId FROM devices LIMIT 3", "expected WHERE, GROUP BY or end of input at 1:30, found 'LIMIT'"),
        ("SELECT a b FROM devices", "expected ',' or FROM at 1:10, found 'b'"),
        ("SELECT a AS from FROM devices", "expected a name after AS at 1:13, found 'from'"),
        ("DELETE FROM devices", "expected SELECT at 1:1, found 'DELETE'"),
        ("SELECT * devices", "expected FROM after '*' at 1:10, found 'devices'"),
    ];
    for (text, message) in query_errors {
        assert_eq!(
            parse_query(text).unwrap_err().to_string(),
            message,
            "query: {text}"
        );
    }
}

#[test]
fn owned_documents_work_like_borrowed_ones() {
    use std::borrow::Cow;

    /// A document that computes its values, as a job record might.
    struct Computed;
    impl Document for Computed {
        fn resolve(&self, path: &[&str]) -> Option<Cow<'_, Value>> {
            match path {
                ["deviceId"] => Some(Cow::Owned(json!("computed"))),
                ["n"] => Some(Cow::Owned(json!(7))),
                _ => None,
            }
        }
        fn to_json(&self) -> Value {
            json!({"deviceId": "computed", "n": 7})
        }
    }
    let condition =
        parse_condition("deviceId = 'computed' AND n * 2 = 14 AND NOT IS_DEFINED(x)").unwrap();
    assert!(condition.matches(&Computed));
    let query = parse_query("SELECT deviceId AS id, n + 1 AS m FROM devices").unwrap();
    assert_eq!(
        query.project([&Computed]),
        vec![json!({"id": "computed", "m": 8})]
    );
}

#[test]
fn nesting_is_bounded() {
    let deep_parens = format!("{}a = 1{}", "(".repeat(200), ")".repeat(200));
    let long_chain = format!("a{} = 1", " + a".repeat(200));
    let many_nots = format!("{}a", "NOT ".repeat(200));
    let many_minus = format!("{}a = 1", "- ".repeat(200));
    for text in [deep_parens, long_chain, many_nots, many_minus] {
        let message = parse_condition(&text).unwrap_err().to_string();
        assert!(
            message.starts_with("the expression nests deeper than 128 levels at 1:"),
            "{message}"
        );
    }
    let fine = format!("{}a{} = 1", "(".repeat(100), " + a)".repeat(100));
    assert!(parse_condition(&fine).is_ok());
}
