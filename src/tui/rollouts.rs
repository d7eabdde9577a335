//! The rollouts panel: per staged rollout, where it stands, its current rate and how far the
//! failure share is from each abort threshold; per wave, a progress bar of ended devices.

use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};
use ratatui::Frame;

use crate::rollout::RolloutView;
use crate::units::fmt_count;

/// Width of a wave's progress bar, in cells.
const BAR: usize = 20;

/// The rows the panel needs for `rollouts` (0: none, no panel).
pub(crate) fn rows(rollouts: &[RolloutView]) -> u16 {
    match rollouts {
        [] => 0,
        list => list.iter().map(|r| 1 + r.waves.len() as u16).sum::<u16>() + 2,
    }
}

/// Draws the panel.
pub(crate) fn draw(f: &mut Frame, area: Rect, rollouts: &[RolloutView]) {
    let mut lines = Vec::new();
    for r in rollouts {
        let mut head = vec![
            Span::raw(format!("{} · {}", r.id, r.status)),
            Span::raw(match r.rate_per_minute {
                Some(rate) => format!(" · rate {}/min", fmt_count(rate.round() as u64)),
                None => " · tier's pace".to_owned(),
            }),
        ];
        for m in &r.margins {
            let share = m.share() * 100.0;
            let limit = m.rule.threshold * 100.0;
            let color = if !m.judged() {
                Color::DarkGray
            } else if share >= limit {
                Color::Red
            } else if share >= limit * 0.5 {
                Color::Yellow
            } else {
                Color::Green
            };
            let waiting = if m.judged() {
                String::new()
            } else {
                format!(", judged from {} ended", fmt_count(m.rule.min_executed))
            };
            head.push(Span::styled(
                format!(
                    " · abort {} {share:.1}% of {limit:.1}% ({:.1} pts left{waiting})",
                    m.rule.failure.name(),
                    (limit - share).max(0.0)
                ),
                Style::default().fg(color),
            ));
        }
        lines.push(Line::from(head));
        for w in &r.waves {
            let ended = w.succeeded + w.failed;
            let filled = (ended as usize * BAR)
                .checked_div(w.devices as usize)
                .unwrap_or(0)
                .min(BAR);
            let bar = format!("{}{}", "█".repeat(filled), "·".repeat(BAR - filled));
            let state = if w.started { "" } else { " (not started)" };
            lines.push(Line::from(format!(
                "  {:<18} {bar} {:>7}/{:<7} {} failed{state}",
                w.job_id,
                fmt_count(ended),
                fmt_count(w.devices),
                fmt_count(w.failed)
            )));
        }
    }
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" rollouts ")),
        area,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::jobs::{AbortRule, DeviceError, DeviceStatus, Failure, Tally};
    use crate::rollout::{Margin, WaveView};
    use crate::tui::widgets::tests::render;

    #[test]
    fn shows_waves_rate_and_abort_margin() {
        let mut tally = Tally::default();
        for i in 0..400 {
            let failed = i < 8;
            tally.count(
                if failed {
                    DeviceStatus::Failed
                } else {
                    DeviceStatus::Completed
                },
                if failed {
                    DeviceError::DeviceStatus
                } else {
                    DeviceError::None
                },
            );
        }
        let wave = |n: u64, devices, succeeded, started| WaveView {
            job_id: format!("fw-w{n}"),
            devices,
            started,
            succeeded,
            failed: 0,
        };
        let list = vec![RolloutView {
            id: "fw".into(),
            status: "wave 2 of 3".into(),
            rate_per_minute: Some(2400.0),
            waves: vec![
                wave(1, 100, 100, true),
                wave(2, 900, 300, true),
                wave(3, 9000, 0, false),
            ],
            margins: vec![Margin {
                rule: AbortRule {
                    failure: Failure::Rejected,
                    threshold: 0.05,
                    min_executed: 200,
                },
                tally,
            }],
        }];
        assert_eq!(rows(&list), 6);
        let text = render(120, 6, |f| draw(f, f.area(), &list));
        for want in [
            "fw · wave 2 of 3 · rate 2400/min · abort rejected 2.0% of 5.0% (3.0 pts left)",
            "fw-w1              ████████████████████     100/100",
            "fw-w2              ██████··············     300/900",
            "(not started)",
        ] {
            assert!(text.contains(want), "{want:?} missing in\n{text}");
        }
    }
}
