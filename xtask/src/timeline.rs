//! A picture of one failover as the client saw it: its 1 ms probes around
//! the event, in lanes (answered by A, answered by B, unanswered), with
//! the event and the RFC's bound marked. Written as SVG by plotters.
use std::{path::Path, time::Instant};

use anyhow::{Result, anyhow};
use greha_tests::probe::Probe;
use plotters::prelude::*;

/// How much of the steady state to show on each side of the change.
const MARGIN_MS: f64 = 30.0;

/// What one picture shows.
pub struct Timeline<'a> {
    pub title: &'a str,
    pub probes: &'a [Probe],
    pub event: Instant,
    /// The span to draw: from the last answer before the event to the
    /// first answer from the new server (the gap's span).
    pub from: Instant,
    pub until: Instant,
    /// The RFC's bound for this event, in ms after it; none for a
    /// preemption.
    pub bound_ms: Option<f64>,
}

fn ms_after(t: Instant, event: Instant) -> f64 {
    if t >= event {
        (t - event).as_secs_f64() * 1e3
    } else {
        -(event - t).as_secs_f64() * 1e3
    }
}

/// The lane of a probe: 2 answered by A, 1 by B, 0 unanswered.
fn lane(p: &Probe) -> i32 {
    match p.by {
        Some('A') => 2,
        Some(_) => 1,
        None => 0,
    }
}

/// Runs of probes in one lane, as (start ms, end ms, lane).
fn runs(t: &Timeline, x0: f64, x1: f64) -> Vec<(f64, f64, i32)> {
    let mut out: Vec<(f64, f64, i32)> = Vec::new();
    for p in t.probes {
        let x = ms_after(p.sent, t.event);
        if x < x0 || x > x1 {
            continue;
        }
        let l = lane(p);
        match out.last_mut() {
            // A probe covers the time until the next one.
            Some(last) if last.2 == l => last.1 = x,
            Some(last) => {
                last.1 = x;
                out.push((x, x, l));
            }
            None => out.push((x, x, l)),
        }
    }
    out
}

pub fn write_svg(path: &Path, t: &Timeline) -> Result<()> {
    let x0 = ms_after(t.from, t.event).min(0.0) - MARGIN_MS;
    let x1 = ms_after(t.until, t.event).max(t.bound_ms.unwrap_or(0.0)) + MARGIN_MS;
    let root = SVGBackend::new(path, (900, 240)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(t.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(x0..x1, -0.5f64..2.5f64)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(3)
        .y_label_formatter(&|y| {
            match y.round() as i32 {
                2 => "answered by A",
                1 => "answered by B",
                _ => "unanswered",
            }
            .to_owned()
        })
        .x_label_formatter(&|x| format!("{x:.0}"))
        .x_desc(match t.bound_ms {
            Some(b) => format!(
                "ms after the event (black line); the RFC bound: {b:.0} ms (magenta); client probes every 1 ms"
            ),
            None => "ms after the event (black line); client probes every 1 ms".to_owned(),
        })
        .draw()
        .map_err(|e| err(&e))?;
    let color = |l: i32| match l {
        2 => BLUE.mix(0.8),
        1 => GREEN.mix(0.8),
        _ => RED.mix(0.8),
    };
    chart
        .draw_series(runs(t, x0, x1).into_iter().map(|(s, e, l)| {
            // At least a hairline, so a single probe shows.
            let e = e.max(s + 0.3);
            let y = f64::from(l);
            Rectangle::new([(s, y - 0.3), (e, y + 0.3)], color(l).filled())
        }))
        .map_err(|e| err(&e))?;
    chart
        .draw_series(LineSeries::new(
            [(0.0, -0.5), (0.0, 2.5)],
            BLACK.stroke_width(2),
        ))
        .map_err(|e| err(&e))?;
    if let Some(b) = t.bound_ms {
        chart
            .draw_series(LineSeries::new(
                [(b, -0.5), (b, 2.5)],
                MAGENTA.stroke_width(2),
            ))
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn probes_become_runs_per_lane() {
        let t0 = Instant::now();
        let probes: Vec<Probe> = "AA..BB"
            .chars()
            .enumerate()
            .map(|(i, c)| Probe {
                sent: t0 + Duration::from_millis(i as u64),
                by: (c != '.').then_some(c),
            })
            .collect();
        let t = Timeline {
            title: "t",
            probes: &probes,
            event: t0 + Duration::from_millis(1),
            from: t0,
            until: t0 + Duration::from_millis(5),
            bound_ms: None,
        };
        let r: Vec<(i64, i64, i32)> = runs(&t, -10.0, 10.0)
            .into_iter()
            .map(|(s, e, l)| (s.round() as i64, e.round() as i64, l))
            .collect();
        // Each run reaches the next one's first probe: no blank between.
        assert_eq!(r, vec![(-1, 1, 2), (1, 3, 0), (3, 4, 1)]);
    }
}
