use super::*;

fn sweep(scenario: &str) -> SweepData {
    SweepData {
        scenario: scenario.to_owned(),
        keys: vec!["hub.units".to_owned()],
        target: None,
        rows: Vec::new(),
        smallest: None,
    }
}

#[test]
fn a_page_holds_everything_it_needs_and_no_placeholder() {
    let page = sweep_page(&sweep("s")).unwrap();
    assert!(!page.contains("{{"), "a placeholder was left");
    assert!(page.contains("var uPlot="), "the chart library is inline");
    assert!(
        page.contains("Permission is hereby granted"),
        "its licence is inline"
    );
    assert!(
        page.contains("default-src 'none'"),
        "the page may load nothing"
    );
    assert!(!page.contains("<script src") && !page.contains("<link"));
}

#[test]
fn data_cannot_end_its_script_element() {
    let page = sweep_page(&sweep("</script><b>x</b>")).unwrap();
    assert!(!page.contains("</script><b>"));
    assert!(page.contains("<\\/script><b>x<\\/b>"));
    assert!(page.contains("<title>fleetsim sweep: &lt;/script&gt;&lt;b&gt;x&lt;/b&gt;</title>"));
}

#[test]
fn a_directory_without_a_summary_is_refused_by_name() {
    let err = check_result_dir(Path::new("src")).unwrap_err().to_string();
    assert!(
        err.starts_with("src: not a fleetsim result directory"),
        "{err}"
    );
}
