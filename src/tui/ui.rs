//! The dashboard's layout: the panels of [`widgets`](super::widgets) placed on the screen, and
//! the help and cancel-confirmation overlays. Works from 80×24 up; extra rows go to the latency
//! and throughput panels.

use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::text::Line;
use ratatui::widgets::{Block, Clear, Paragraph};
use ratatui::Frame;

use super::app::App;
use super::widgets;

/// Help overlay text, a line per key.
const HELP: [&str; 9] = [
    "q, Esc, Ctrl-C  quit (the run stops, results are written)",
    "↑/↓, k/j        select a job (the top row is all jobs)",
    "Tab, Shift-Tab  next/previous latency measure",
    "+ / -           longer/shorter throughput window",
    "c               cancel the selected job (asks first)",
    "p               freeze/unfreeze the view",
    "?               this help",
    "",
    "any key closes this help",
];

/// Draws the whole dashboard.
pub fn draw(f: &mut Frame, app: &App) {
    let jobs_rows = (app.view.jobs.len() as u16 + 4).clamp(5, 12);
    let [header, jobs, middle, bottom, keys] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(jobs_rows),
        Constraint::Min(7),
        Constraint::Length(8),
        Constraint::Length(1),
    ])
    .areas(f.area());
    widgets::header(f, header, app);
    widgets::jobs(f, jobs, app);
    let [latency, throughput] =
        Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(middle);
    widgets::latency(f, latency, app);
    widgets::throughput(f, throughput, app);
    let [errors, log] =
        Layout::horizontal([Constraint::Length(30), Constraint::Min(0)]).areas(bottom);
    widgets::errors(f, errors, app);
    widgets::log(f, log, app);
    widgets::keys(f, keys);
    if let Some(id) = &app.confirm {
        popup(f, " cancel job ", &[format!("Cancel job {id}? y/n")]);
    } else if app.help {
        popup(f, " keys ", &HELP.map(str::to_owned));
    }
}

/// A bordered box in the middle of the screen, sized to its lines.
fn popup(f: &mut Frame, title: &str, lines: &[String]) {
    let width = lines.iter().map(|l| l.chars().count()).max().unwrap_or(0) as u16 + 4;
    let [area] = Layout::horizontal([Constraint::Length(width)])
        .flex(Flex::Center)
        .areas(f.area());
    let [area]: [Rect; 1] = Layout::vertical([Constraint::Length(lines.len() as u16 + 2)])
        .flex(Flex::Center)
        .areas(area);
    f.render_widget(Clear, area);
    let text: Vec<Line> = lines.iter().map(|l| Line::from(l.as_str())).collect();
    f.render_widget(
        Paragraph::new(text).block(Block::bordered().title(title)),
        area,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::jobs::JobStatus;
    use crate::tui::app::tests::{header, job, view};
    use crate::tui::widgets::tests::render;

    fn app() -> App {
        let mut app = App::new(header());
        app.absorb(view(
            5_000_000,
            vec![
                job("reboot", JobStatus::Running, 100, 20),
                job("fw-1", JobStatus::Completed, 180, 0),
                job("fw-2", JobStatus::Queued, 0, 0),
            ],
        ));
        app
    }

    #[test]
    fn every_panel_fits_in_80_by_24() {
        let app = app();
        let text = render(80, 24, |f| draw(f, &app));
        for want in [
            "scenario small",
            "jobs (↑/↓ select)",
            "fw-2",
            "latency: delivery",
            "ops/s",
            "errors",
            "events",
            "q quit",
        ] {
            assert!(text.contains(want), "{want:?} missing in\n{text}");
        }
    }

    #[test]
    fn overlays_show_over_the_panels() {
        let mut app = app();
        app.confirm = Some("reboot".into());
        let text = render(80, 24, |f| draw(f, &app));
        assert!(text.contains("Cancel job reboot? y/n"), "{text}");
        app.confirm = None;
        app.help = true;
        let text = render(100, 30, |f| draw(f, &app));
        assert!(text.contains("freeze/unfreeze"), "{text}");
    }

    #[test]
    fn tiny_terminals_do_not_panic() {
        let app = app();
        for (w, h) in [(1, 1), (20, 5), (40, 10), (200, 60)] {
            render(w, h, |f| draw(f, &app));
        }
    }
}
