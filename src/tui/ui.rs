//! The dashboard's layout: the panels of [`widgets`](super::widgets) placed on the screen, and
//! the help and cancel-confirmation overlays. Works from 80×24 up; extra rows go to the latency
//! and throughput panels.

use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::text::Line;
use ratatui::widgets::{Block, Clear, Paragraph};
use ratatui::Frame;

use super::app::App;
use super::rollouts;
use super::widgets::{self, JobsTable};

/// Help overlay text, a line per key.
const HELP: [&str; 10] = [
    "q, Esc, Ctrl-C  quit (the run stops, results are written)",
    "↑/↓, k/j        select a job (the top row is all jobs)",
    "click, wheel    select a job with the mouse",
    "Tab, Shift-Tab  next/previous latency measure",
    "+ / -           longer/shorter throughput window",
    "c               cancel the selected job (asks first)",
    "p               freeze/unfreeze the view",
    "?               this help",
    "",
    "any key closes this help",
];

/// The screen `area` cut into bands: header, jobs table, latency and throughput, errors and
/// events, key line.
/// The rollouts panel (when the run has rollouts) sits between the jobs and the latency.
fn bands(area: Rect, app: &App) -> [Rect; 6] {
    let jobs_rows = (app.view.jobs.len() as u16 + 4).clamp(5, 12);
    Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(jobs_rows),
        Constraint::Length(rollouts::rows(&app.rollouts).min(12)),
        Constraint::Min(7),
        Constraint::Length(8),
        Constraint::Length(1),
    ])
    .areas(area)
}

/// The jobs table as [`draw`] places it on a screen of `area`, to map mouse positions to rows.
pub(crate) fn jobs_table(area: Rect, app: &App) -> JobsTable {
    JobsTable::new(bands(area, app)[1], app)
}

/// Draws the whole dashboard.
pub(crate) fn draw(f: &mut Frame, app: &App) {
    let [header, jobs, staged, middle, bottom, keys] = bands(f.area(), app);
    widgets::header(f, header, app);
    widgets::jobs(f, jobs, app);
    if !app.rollouts.is_empty() {
        rollouts::draw(f, staged, &app.rollouts);
    }
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
    use crossterm::event::{KeyModifiers, MouseButton, MouseEvent, MouseEventKind};

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

    fn click(column: u16, row: u16) -> MouseEvent {
        MouseEvent {
            kind: MouseEventKind::Down(MouseButton::Left),
            column,
            row,
            modifiers: KeyModifiers::NONE,
        }
    }

    /// The screen cell where `needle` starts in the rendered `text`.
    fn cell_of(text: &str, needle: &str) -> (u16, u16) {
        text.lines()
            .enumerate()
            .find_map(|(y, line)| {
                let i = line.find(needle)?;
                Some((line[..i].chars().count() as u16, y as u16))
            })
            .unwrap_or_else(|| panic!("{needle:?} not on the screen:\n{text}"))
    }

    /// Draws `app` on a 100×40 screen the way the frame loop does: answers the screen and the
    /// jobs table that mouse positions on it are mapped with.
    fn frame(app: &mut App) -> (String, JobsTable) {
        let text = render(100, 40, |f| draw(f, app));
        let table = jobs_table(Rect::new(0, 0, 100, 40), app);
        app.jobs_offset = table.offset;
        (text, table)
    }

    #[test]
    fn a_click_selects_the_job_drawn_under_it() {
        let mut app = App::new(header());
        let jobs = (0..12)
            .map(|i| job(&format!("job-{i:02}"), JobStatus::Running, 0, 0))
            .collect();
        app.absorb(view(0, jobs));
        // The table shows 9 of its 13 rows; selecting job-10 scrolls it.
        app.selected = 11;
        let (text, table) = frame(&mut app);
        assert!(
            !text.contains("(all)") && !text.contains("job-01"),
            "{text}"
        );
        for id in ["job-10", "job-04", "job-02"] {
            let (column, row) = cell_of(&text, id);
            app.on_mouse(click(column + 2, row), &table);
            assert_eq!(app.selected_job().map(|j| j.id.as_str()), Some(id));
            let (again, _) = frame(&mut app);
            assert_eq!(cell_of(&again, id), (column, row), "the row stays put");
        }
        let (text, table) = frame(&mut app);
        let (column, row) = cell_of(&text, "job-05");
        for (x, y) in [
            (column, row - 4), // the header row
            (0, row),          // the border
            (column, row + 9), // the panel below
            (99, 39),
        ] {
            app.on_mouse(click(x, y), &table);
            assert_eq!(app.selected_job().unwrap().id, "job-02", "click at {x},{y}");
        }
        // The wheel moves the selection, and the table scrolls only when it must.
        let wheel = |kind| MouseEvent {
            kind,
            ..click(0, 0)
        };
        app.on_mouse(wheel(MouseEventKind::ScrollUp), &table);
        let (text, table) = frame(&mut app);
        assert_eq!(app.selected_job().unwrap().id, "job-01");
        assert_eq!(
            cell_of(&text, "job-01").1,
            row - 3,
            "scrolled by one:\n{text}"
        );
        app.on_mouse(wheel(MouseEventKind::ScrollDown), &table);
        app.on_mouse(wheel(MouseEventKind::ScrollDown), &table);
        assert_eq!(app.selected_job().unwrap().id, "job-03");
        // Overlays wait for a key.
        let (text, table) = frame(&mut app);
        app.help = true;
        app.on_mouse(click(3, cell_of(&text, "job-05").1), &table);
        assert_eq!(app.selected_job().unwrap().id, "job-03");
    }

    #[test]
    fn tiny_terminals_do_not_panic() {
        let app = app();
        for (w, h) in [(1, 1), (20, 5), (40, 10), (200, 60)] {
            render(w, h, |f| draw(f, &app));
        }
    }
}
