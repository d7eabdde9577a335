//! The dashboard's panels, each a pure function of [`App`] drawn into an area: header, jobs
//! table, latency, throughput, errors, event log and the key line.

use ratatui::layout::{Constraint, Layout, Margin, Position, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Bar, BarChart, BarGroup, Block, Cell, Paragraph, Row, Sparkline, Table, TableState,
};
use ratatui::Frame;

use crate::hub::jobs::{ErrorCounts, JobStatus};
use crate::hub::{HubView, JobView};
use crate::metrics::{Measure, MeasureSnapshot};
use crate::report::DeviceJobStatistics;
use crate::units::{fmt_count, fmt_secs, fmt_us};

use super::app::App;

/// A text progress bar `width` cells wide followed by the percentage.
fn progress_bar(done: u64, total: u64, width: usize) -> String {
    let ratio = if total == 0 {
        0.0
    } else {
        done as f64 / total as f64
    };
    let filled = ((ratio * width as f64).round() as usize).min(width);
    format!(
        "{}{} {:>3.0}%",
        "█".repeat(filled),
        "░".repeat(width - filled),
        ratio * 100.0
    )
}

fn measure_label(m: Measure) -> &'static str {
    match m {
        Measure::EngineLag => "engine lag",
        Measure::Delivery => "delivery",
        Measure::RoundTrip => "round trip",
        Measure::Completion => "completion",
    }
}

fn short_type(job_type: &str) -> &str {
    match job_type {
        "scheduleDeviceMethod" => "method",
        "scheduleUpdateTwin" => "twin",
        other => other,
    }
}

fn status_style(status: JobStatus) -> Style {
    match status {
        JobStatus::Running => Style::new().fg(Color::Cyan),
        JobStatus::Completed => Style::new().fg(Color::Green),
        JobStatus::Failed => Style::new().fg(Color::Red),
        JobStatus::Cancelled => Style::new().fg(Color::Yellow),
        JobStatus::Queued | JobStatus::Scheduled => Style::new(),
    }
}

/// The name of what the lower panels show: the selected job or all jobs.
fn scope(app: &App) -> &str {
    app.selected_job().map_or("all jobs", |j| j.id.as_str())
}

/// Two lines: scenario, seed, elapsed and time left, run state; fleet and transport.
pub(crate) fn header(f: &mut Frame, area: Rect, app: &App) {
    let v = &app.view;
    let h = &app.header;
    let mut first = vec![Span::raw(format!("scenario {}", h.scenario))];
    if let Some(seed) = h.seed {
        first.push(Span::raw(format!("  seed {seed}")));
    }
    match h.virtual_time {
        None => first.push(Span::raw(format!("  elapsed {}", fmt_secs(v.now_us)))),
        Some(since) => {
            let wall = since.elapsed();
            first.push(Span::raw(format!(
                "  simulated {}  wall {}  {:.0}x",
                fmt_secs(v.now_us),
                fmt_secs(wall.as_micros() as u64),
                v.now_us as f64 / 1e6 / wall.as_secs_f64().max(1e-3)
            )));
        }
    }
    if let Some(d) = h.duration_us {
        first.push(Span::raw(format!(
            "  left {}",
            fmt_secs(d.saturating_sub(v.now_us))
        )));
    }
    if app.frozen {
        first.push("  FROZEN (p)".black().on_yellow());
    }
    if app.finished.is_some() {
        first.push("  FINISHED, q quits ".black().on_green());
    }
    let done = v.jobs.iter().filter(|j| j.status.is_terminal()).count();
    let second = Line::from(format!(
        "fleet {} devices, {} connected, {} offline  transport {}  jobs {done}/{} ended",
        fmt_count(v.devices),
        fmt_count(v.connected),
        fmt_count(v.devices.saturating_sub(v.connected)),
        h.transport,
        v.jobs.len(),
    ));
    f.render_widget(Paragraph::new(vec![Line::from(first), second]), area);
}

/// Sums the device counts of every job.
fn all_stats(jobs: &[JobView]) -> DeviceJobStatistics {
    let mut s = DeviceJobStatistics::default();
    for j in jobs {
        s.device_count += j.stats.device_count;
        s.failed_count += j.stats.failed_count;
        s.succeeded_count += j.stats.succeeded_count;
        s.running_count += j.stats.running_count;
        s.pending_count += j.stats.pending_count;
    }
    s
}

fn stat_cells(s: &DeviceJobStatistics) -> [Cell<'static>; 5] {
    [
        Cell::from(progress_bar(
            s.succeeded_count + s.failed_count,
            s.device_count,
            6,
        )),
        Cell::from(fmt_count(s.succeeded_count)),
        Cell::from(fmt_count(s.failed_count)),
        Cell::from(fmt_count(s.running_count)),
        Cell::from(fmt_count(s.pending_count)),
    ]
}

/// How many rows the jobs table in `area` shows (at least one, to scroll by): the borders and
/// the header row take three lines.
fn rows_shown(area: Rect) -> usize {
    usize::from(area.height.saturating_sub(3)).max(1)
}

/// Where the jobs table's rows are on the screen: what a mouse position is mapped with. Rows
/// count like [`App::selected`]: 0 is "(all)", `i` is job `i - 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JobsTable {
    /// The table's area, borders included.
    pub(crate) area: Rect,
    /// The first row shown.
    pub(crate) offset: usize,
}

impl JobsTable {
    /// The table of `app` drawn in `area`: scrolled from where it was last drawn
    /// ([`App::jobs_offset`]) only as far as it takes to show the selected row, and no further
    /// than its last row.
    pub(crate) fn new(area: Rect, app: &App) -> JobsTable {
        let shown = rows_shown(area);
        let rows = app.view.jobs.len() + 1;
        let selected = app.selected.min(rows - 1);
        let offset = app
            .jobs_offset
            .min(rows.saturating_sub(shown))
            .max((selected + 1).saturating_sub(shown))
            .min(selected);
        JobsTable { area, offset }
    }

    /// The row under the screen cell (`column`, `row`), if one of the table's `rows` is there.
    pub(crate) fn row_at(&self, column: u16, row: u16, rows: usize) -> Option<usize> {
        let inside = self.area.inner(Margin::new(1, 1));
        let first = inside.y.saturating_add(1); // below the header
        if !inside.contains(Position::new(column, row)) || row < first {
            return None;
        }
        let i = self.offset + usize::from(row - first);
        (i < rows).then_some(i)
    }
}

/// The "(all)" row: every job's counts summed.
fn all_row(v: &HubView) -> Row<'static> {
    let ended = v.jobs.iter().filter(|j| j.status.is_terminal()).count();
    let mut cells = vec![
        Cell::from("(all)"),
        Cell::from(""),
        Cell::from(format!("{ended}/{} ended", v.jobs.len())),
    ];
    cells.extend(stat_cells(&all_stats(&v.jobs)));
    cells.push(Cell::from(format!("{:.0}", v.metrics.current.ops_per_s)));
    cells.push(Cell::from(""));
    Row::new(cells)
}

fn job_row(j: &JobView) -> Row<'static> {
    let mut cells = vec![
        Cell::from(j.id.clone()),
        Cell::from(short_type(j.job_type).to_owned()),
        Cell::from(j.status.name()).style(status_style(j.status)),
    ];
    cells.extend(stat_cells(&j.stats));
    cells.push(Cell::from(format!("{:.0}", j.ops_per_s)));
    cells.push(Cell::from(fmt_secs((j.makespan_ms * 1000.0) as u64)));
    Row::new(cells)
}

/// The jobs table with an "all" row first; the selected row is highlighted and in view.
pub(crate) fn jobs(f: &mut Frame, area: Rect, app: &App) {
    let v = &app.view;
    let table = JobsTable::new(area, app);
    // Only the rows in view are built: a hub may hold thousands of jobs.
    let end = (table.offset + rows_shown(area)).min(v.jobs.len() + 1);
    let mut rows = Vec::with_capacity(end - table.offset);
    if table.offset == 0 {
        rows.push(all_row(v));
    }
    let first_job = table.offset.saturating_sub(1);
    rows.extend(v.jobs[first_job..end - 1].iter().map(job_row));
    let widths = [
        Constraint::Min(6),
        Constraint::Length(6),
        Constraint::Length(9),
        Constraint::Length(11),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(6),
    ];
    let header = Row::new([
        "job", "type", "status", "progress", "ok", "failed", "run", "pend", "ops/s", "span",
    ])
    .style(Style::new().add_modifier(Modifier::BOLD));
    let shown = Table::new(rows, widths)
        .header(header)
        .column_spacing(1)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .block(Block::bordered().title(" jobs (↑/↓ select) "));
    let mut state =
        TableState::default().with_selected(Some(app.selected.saturating_sub(table.offset)));
    f.render_stateful_widget(shown, area, &mut state);
}

/// The snapshot of the chosen measure for the selected job or all jobs.
fn chosen_measure(app: &App) -> Option<&MeasureSnapshot> {
    let m = app.measure();
    let metrics = &app.view.metrics;
    match app.selected_job() {
        Some(j) => metrics.job(&j.id).map(|s| s.measure(m)),
        None => Some(metrics.measure(m)),
    }
}

/// A bucket bound for a bar label: `250µ`, `2.5m`, `10s`.
fn bound_label(upper_us: u64) -> String {
    match upper_us {
        0..=999 => format!("{upper_us}µ"),
        1_000..=999_999 => format!("{}m", upper_us as f64 / 1e3),
        _ => format!("{}s", upper_us as f64 / 1e6),
    }
}

/// The percentile ladder and a bar chart of the coarse histogram (empty ends trimmed).
pub(crate) fn latency(f: &mut Frame, area: Rect, app: &App) {
    let title = format!(
        " latency: {} · {} (Tab) ",
        measure_label(app.measure()),
        scope(app)
    );
    let block = Block::bordered().title(title);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let Some(ms) = chosen_measure(app).filter(|ms| ms.stats.count > 0) else {
        f.render_widget(Paragraph::new("no samples yet"), inner);
        return;
    };
    let s = &ms.stats;
    let [ladder_area, chart_area] =
        Layout::horizontal([Constraint::Length(29), Constraint::Min(0)]).areas(inner);
    let pair = |a: &str, x: u64, b: &str, y: u64| {
        Line::from(format!("{a:<6}{:>7} {b:<7}{:>7}", fmt_us(x), fmt_us(y)))
    };
    let ladder = vec![
        pair("p50", s.p50_us, "p99.9", s.p999_us),
        pair("p90", s.p90_us, "p99.99", s.p9999_us),
        pair("p99", s.p99_us, "max", s.max_us),
        Line::from(format!(
            "n {}  mean {}",
            fmt_count(s.count),
            fmt_us(s.mean_us as u64)
        )),
    ];
    f.render_widget(Paragraph::new(ladder), ladder_area);
    let first = ms.buckets.iter().position(|b| b.count > 0).unwrap_or(0);
    let last = ms.buckets.iter().rposition(|b| b.count > 0).unwrap_or(0);
    let shown = &ms.buckets[first..=last];
    let bars: Vec<Bar> = shown
        .iter()
        .map(|b| {
            Bar::default()
                .value(b.count)
                .text_value(String::new())
                .label(Line::from(bound_label(b.upper_us)))
        })
        .collect();
    let width = (chart_area.width / shown.len() as u16)
        .saturating_sub(1)
        .clamp(1, 6);
    let chart = BarChart::default()
        .data(BarGroup::default().bars(&bars))
        .bar_width(width)
        .bar_gap(1)
        .bar_style(Style::new().fg(Color::Cyan));
    f.render_widget(chart, chart_area);
}

/// Operations per second over the chosen window, with the current and peak rates.
pub(crate) fn throughput(f: &mut Frame, area: Rect, app: &App) {
    let m = &app.view.metrics;
    let block = Block::bordered().title(format!(
        " ops/s · last {} (+/-) ",
        fmt_secs(app.window_s() as u64 * 1_000_000)
    ));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let [text_area, spark_area] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(inner);
    let shown = app.window_s().min(spark_area.width as usize);
    let skip = app.history.len().saturating_sub(shown);
    let data: Vec<u64> = app.history.iter().skip(skip).map(|&r| r as u64).collect();
    f.render_widget(
        Paragraph::new(format!(
            "now {:.0}  peak {:.0}  mean {:.0}",
            m.current.ops_per_s, m.totals.ops_per_s_peak, m.totals.ops_per_s_mean
        )),
        text_area,
    );
    f.render_widget(
        Sparkline::default()
            .data(&data)
            .style(Style::new().fg(Color::Green)),
        spark_area,
    );
}

/// Failures by cause for the selected job or all jobs, and job creations the hub refused.
pub(crate) fn errors(f: &mut Frame, area: Rect, app: &App) {
    let mut e = ErrorCounts::default();
    let jobs: Vec<&JobView> = match app.selected_job() {
        Some(j) => vec![j],
        None => app.view.jobs.iter().collect(),
    };
    for j in jobs {
        e.offline += j.errors.offline;
        e.timeout += j.errors.timeout;
        e.expired += j.errors.expired;
        e.rejected += j.errors.rejected;
        for &(status, n) in &j.errors.by_status {
            match e.by_status.iter_mut().find(|(s, _)| *s == status) {
                Some((_, total)) => *total += n,
                None => e.by_status.push((status, n)),
            }
        }
    }
    e.by_status.sort_unstable();
    let row = |label: String, n: u64| Line::from(format!("{label:<18}{:>8}", fmt_count(n)));
    let mut lines = vec![
        row("404103 offline".into(), e.offline),
        row("504101 timeout".into(), e.timeout),
        row("expired".into(), e.expired),
        row("rejected".into(), e.rejected),
        row("refused/throttled".into(), app.refused),
    ];
    lines.extend(
        e.by_status
            .iter()
            .map(|&(s, n)| row(format!("device status {s}"), n)),
    );
    let block = Block::bordered().title(format!(" errors · {} ", scope(app)));
    f.render_widget(Paragraph::new(lines).block(block), area);
}

/// The newest event log lines that fit, oldest at the top.
pub(crate) fn log(f: &mut Frame, area: Rect, app: &App) {
    let rows = area.height.saturating_sub(2) as usize;
    let skip = app.log.len().saturating_sub(rows);
    let lines: Vec<Line> = app
        .log
        .iter()
        .skip(skip)
        .map(|l| {
            Line::from(vec![
                format!("{:>7} ", fmt_secs(l.at_us)).dim(),
                Span::raw(l.text.clone()),
            ])
        })
        .collect();
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" events ")),
        area,
    );
}

/// The key line at the bottom.
pub(crate) fn keys(f: &mut Frame, area: Rect) {
    f.render_widget(
        Paragraph::new("q quit  ↑↓ job  Tab measure  +/- window  c cancel job  p freeze  ? help")
            .dim(),
        area,
    );
}

#[cfg(test)]
pub(crate) mod tests {
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    use super::*;
    use crate::metrics::{Recorder, SecondRow};
    use crate::tui::app::tests::{header as test_header, job, view};

    /// Renders `draw` into a `w`×`h` test terminal and returns its text, a line per row.
    pub(crate) fn render(w: u16, h: u16, draw: impl FnOnce(&mut Frame)) -> String {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        t.draw(draw).unwrap();
        let buf = t.backend().buffer();
        (0..h)
            .map(|y| (0..w).map(|x| buf[(x, y)].symbol()).collect::<String>())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn app() -> App {
        let mut app = App::new(test_header());
        let mut v = view(
            12_300_000,
            vec![
                job("reboot", JobStatus::Running, 100, 20),
                job("fw-1", JobStatus::Completed, 180, 0),
            ],
        );
        let mut r = Recorder::new();
        let slot = r.add_job("reboot");
        r.add_job("fw-1");
        for us in [1_500, 2_000, 3_000, 40_000] {
            r.record(slot, Measure::Delivery, us);
        }
        v.metrics = r.snapshot(12_300_000);
        v.metrics.recent = (0..12)
            .map(|second| SecondRow {
                second,
                ops_done: 0,
                ops_per_s: (second * 10) as f64,
                in_flight: 0,
                failures: 0,
                connected: 0,
                faults: 0,
            })
            .collect();
        app.absorb(v);
        app
    }

    #[test]
    fn header_shows_run_and_fleet() {
        let mut app = app();
        app.frozen = true;
        let text = render(100, 2, |f| header(f, f.area(), &app));
        for want in [
            "scenario small",
            "seed 5",
            "elapsed 12.3s",
            "left 17.7s",
            "FROZEN",
            "300 devices",
            "285 connected",
            "15 offline",
            "transport in-process",
            "jobs 1/2 ended",
        ] {
            assert!(text.contains(want), "{want:?} missing in\n{text}");
        }
    }

    #[test]
    fn header_in_virtual_time_shows_simulated_and_wall_time() {
        let mut app = app();
        app.header.virtual_time = Some(crate::clock::Stopwatch::start());
        let text = render(100, 2, |f| header(f, f.area(), &app));
        assert!(text.contains("simulated 12.3s  wall "), "{text}");
        assert!(!text.contains("elapsed"), "{text}");
        // A few microseconds of wall time against 12.3 simulated seconds.
        let speedup: f64 = text
            .split_whitespace()
            .find_map(|w| w.strip_suffix('x')?.parse().ok())
            .expect("a speed-up");
        assert!(speedup > 100.0, "{text}");
    }

    #[test]
    fn jobs_table_shows_counts_and_progress() {
        let app = app();
        let text = render(80, 6, |f| jobs(f, f.area(), &app));
        for want in [
            "job",
            "progress",
            "(all)",
            "1/2 ended",
            "reboot",
            "method",
            "running",
            "fw-1",
            "completed",
            "100",
            "180",
            "60%",
            "2.5s",
        ] {
            assert!(text.contains(want), "{want:?} missing in\n{text}");
        }
    }

    #[test]
    fn jobs_table_scrolls_only_as_far_as_it_must() {
        let mut app = App::new(test_header());
        let six = (0..6)
            .map(|i| job(&format!("j{i}"), JobStatus::Running, 0, 0))
            .collect();
        app.absorb(view(0, six));
        // Borders and header at y 10, 11 and 15: rows show on y 12..=14, 3 of 7.
        let area = Rect::new(0, 10, 80, 6);
        app.selected = 5;
        assert_eq!(JobsTable::new(area, &app).offset, 3);
        app.jobs_offset = 3;
        app.selected = 3;
        assert_eq!(JobsTable::new(area, &app).offset, 3, "still in view");
        app.selected = 2;
        assert_eq!(JobsTable::new(area, &app).offset, 2);
        app.jobs_offset = 6;
        app.selected = 6;
        let tall = Rect::new(0, 10, 80, 12);
        assert_eq!(JobsTable::new(tall, &app).offset, 0, "all 7 rows fit");

        let table = JobsTable { area, offset: 3 };
        assert_eq!(table.row_at(1, 12, 7), Some(3));
        assert_eq!(table.row_at(78, 14, 7), Some(5));
        assert_eq!(table.row_at(1, 11, 7), None, "header");
        assert_eq!(table.row_at(1, 15, 7), None, "bottom border");
        assert_eq!(table.row_at(79, 12, 7), None, "right border");
        assert_eq!(table.row_at(1, 13, 4), None, "past the last row");
        let flat = JobsTable::new(Rect::new(0, 0, 80, 2), &app);
        assert_eq!(flat.row_at(1, 1, 7), None, "no room for rows");
    }

    #[test]
    fn latency_shows_ladder_and_bars_for_the_selected_job() {
        let mut app = app();
        app.selected = 1;
        let text = render(60, 8, |f| latency(f, f.area(), &app));
        for want in [
            "delivery · reboot",
            "p50",
            "2.0ms",
            "p99.99",
            "max",
            "40.0ms",
            "n 4",
            "2.5m",
            "50m",
        ] {
            assert!(text.contains(want), "{want:?} missing in\n{text}");
        }
        app.selected = 2;
        let text = render(60, 8, |f| latency(f, f.area(), &app));
        assert!(text.contains("no samples yet"), "{text}");
    }

    #[test]
    fn throughput_shows_rates_and_window() {
        let app = app();
        let text = render(40, 6, |f| throughput(f, f.area(), &app));
        for want in ["ops/s · last 1m00s", "now", "peak", "mean"] {
            assert!(text.contains(want), "{want:?} missing in\n{text}");
        }
        assert!(
            text.chars().any(|c| "▁▂▃▄▅▆▇█".contains(c)),
            "no sparkline in\n{text}"
        );
    }

    #[test]
    fn errors_sum_causes_over_jobs() {
        let mut app = app();
        app.refused = 3;
        let text = render(40, 9, |f| errors(f, f.area(), &app));
        for want in [
            "errors · all jobs",
            "404103 offline",
            "14",
            "504101 timeout",
            "device status 503",
            "22",
            "refused/throttled",
            "3",
        ] {
            assert!(text.contains(want), "{want:?} missing in\n{text}");
        }
    }

    #[test]
    fn log_shows_newest_lines_with_times() {
        let app = app();
        let text = render(60, 4, |f| log(f, f.area(), &app));
        assert!(
            text.contains("12.3s job fw-1 completed: 180 succeeded"),
            "{text}"
        );
        assert!(
            !text.contains("job reboot created"),
            "only the newest two fit:\n{text}"
        );
    }

    #[test]
    fn formats() {
        assert_eq!(fmt_count(12_345), "12.3k");
        assert_eq!(fmt_count(1_000_000), "1.00M");
        assert_eq!(fmt_secs(125_000_000), "2m05s");
        assert_eq!(progress_bar(1, 2, 4), "██░░  50%");
        assert_eq!(bound_label(2_500), "2.5m");
    }
}
