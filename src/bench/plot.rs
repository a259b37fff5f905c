//! `billing bench … --plot FILE.svg`: one row per scenario, throughput against N on
//! the left and latency percentiles against N on the right (log N). A run of many
//! N (`--n 1000,10000,100000`) draws curves; a figure with several parts (reads:
//! healthz, tariffs, profile; webhooks: the service and its two ceilings) draws one
//! series per part.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;
use serde_json::Value;

const ROW_HEIGHT: u32 = 340;
const WIDTH: u32 = 1200;
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// (N, value) points of one named line.
type Series = BTreeMap<String, Vec<(f64, f64)>>;

struct Panel {
    throughput: Series,
    latency: Series,
}

/// The parts of a figure that carry a throughput: "" (the scenario itself) and
/// each `<part>_throughput_per_s`, plus the webhooks ceilings.
fn parts(f: &Value) -> Vec<(String, String)> {
    let Some(map) = f.as_object() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for key in map.keys() {
        if let Some(prefix) = key.strip_suffix("throughput_per_s") {
            let label = prefix.trim_end_matches('_');
            out.push((prefix.to_owned(), label.to_owned()));
        }
    }
    out
}

/// Whether the figures of `scenario` differ in `key` (then it names their series).
fn varies(figures: &[Value], scenario: &str, key: &str) -> bool {
    let mut seen: Vec<&Value> = figures
        .iter()
        .filter(|f| f["scenario"] == scenario)
        .map(|f| &f[key])
        .collect();
    seen.sort_by_key(|v| v.to_string());
    seen.dedup();
    seen.len() > 1
}

fn panels(figures: &[Value]) -> BTreeMap<String, Panel> {
    let mut out: BTreeMap<String, Panel> = BTreeMap::new();
    for f in figures {
        let Some(scenario) = f["scenario"].as_str() else {
            continue;
        };
        let by_c = varies(figures, scenario, "concurrency");
        let by_pool = varies(figures, scenario, "pool_size");
        let Some(n) = f["n"].as_f64() else {
            continue;
        };
        let mut suffix = String::new();
        if by_c {
            suffix.push_str(&format!(" C={}", f["concurrency"]));
        }
        if by_pool {
            suffix.push_str(&format!(" pool={}", f["pool_size"]));
        }
        if f["processes"].as_u64().is_some_and(|p| p > 1) {
            suffix.push_str(&format!(" {} processes", f["processes"]));
        }
        let panel = out.entry(scenario.to_owned()).or_insert_with(|| Panel {
            throughput: Series::new(),
            latency: Series::new(),
        });
        let add = |series: &mut Series, name: String, v: Option<f64>| {
            if let Some(v) = v.filter(|v| v.is_finite()) {
                series.entry(name).or_default().push((n, v));
            }
        };
        for (prefix, label) in parts(f) {
            // The reads scenario's own figure is the tariff list.
            let name = if label.is_empty() && scenario == "reads" {
                "tariffs".to_owned()
            } else if label.is_empty() {
                scenario.to_owned()
            } else {
                label.clone()
            };
            add(
                &mut panel.throughput,
                format!("{name}{suffix}"),
                f[format!("{prefix}throughput_per_s")].as_f64(),
            );
            for q in ["p50", "p90", "p99"] {
                add(
                    &mut panel.latency,
                    format!("{name} {q}{suffix}"),
                    f[format!("{prefix}{q}_ms")].as_f64(),
                );
            }
        }
        if scenario == "webhooks" {
            add(
                &mut panel.throughput,
                format!("same-statements ceiling{suffix}"),
                f["ceiling_per_s"].as_f64(),
            );
            add(
                &mut panel.throughput,
                format!("pgbench tpcb-like{suffix}"),
                f["pgbench_tps"].as_f64(),
            );
        }
    }
    out
}

/// Draws the figures of a run into an SVG file.
pub fn draw(figures: &[Value], path: &Path) -> Result<(), String> {
    let panels = panels(figures);
    if panels.is_empty() {
        return Err("no figures to draw".into());
    }
    let height = ROW_HEIGHT * panels.len() as u32;
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let rows = root.split_evenly((panels.len(), 2));
    for (i, (scenario, panel)) in panels.iter().enumerate() {
        chart(
            &rows[2 * i],
            &format!("{scenario}: throughput (per s)"),
            &panel.throughput,
        )?;
        chart(
            &rows[2 * i + 1],
            &format!("{scenario}: latency (ms)"),
            &panel.latency,
        )?;
    }
    root.present().map_err(|e| e.to_string())
}

fn chart(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    title: &str,
    series: &Series,
) -> Result<(), String> {
    let points = || series.values().flatten();
    let (lo, hi) = points().fold((f64::MAX, f64::MIN), |(lo, hi), &(n, _)| {
        (lo.min(n), hi.max(n))
    });
    let top = points().fold(0.0f64, |m, &(_, v)| m.max(v));
    if series.is_empty() || top <= 0.0 {
        area.titled(&format!("{title}: not measured"), ("sans-serif", 16))
            .map_err(|e| e.to_string())?;
        return Ok(());
    }
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d((lo / 1.5..hi * 1.5).log_scale(), 0.0..top * 1.15)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("N")
        .x_label_formatter(&|n| format!("{n:.0}"))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let mut pts = pts.clone();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn draws_each_part_of_each_scenario_as_its_own_series() {
        let figures = vec![
            json!({"scenario": "reads", "n": 1000, "concurrency": 16, "pool_size": 32,
                   "throughput_per_s": 900.0, "p50_ms": 1.0, "p90_ms": 2.0, "p99_ms": 3.0,
                   "healthz_throughput_per_s": 1000.0, "healthz_p99_ms": 1.0}),
            json!({"scenario": "reads", "n": 10000, "concurrency": 16, "pool_size": 32,
                   "throughput_per_s": 950.0, "p50_ms": 1.0, "p90_ms": 2.0, "p99_ms": 3.0,
                   "healthz_throughput_per_s": 1100.0, "healthz_p99_ms": 1.0}),
            json!({"scenario": "renew", "n": 1000, "concurrency": 64, "pool_size": 32,
                   "throughput_per_s": 500.0}),
        ];
        let panels = super::panels(&figures);
        assert_eq!(panels.len(), 2);
        let reads = &panels["reads"];
        assert_eq!(
            reads.throughput["tariffs"],
            vec![(1000.0, 900.0), (10000.0, 950.0)]
        );
        assert_eq!(reads.throughput["healthz"].len(), 2);
        assert_eq!(reads.latency["healthz p99"].len(), 2);
        assert!(panels["renew"].latency.is_empty());

        let path = std::env::temp_dir().join(format!("bench-plot-{}.svg", uuid::Uuid::new_v4()));
        super::draw(&figures, &path).expect("drawn");
        let svg = std::fs::read_to_string(&path).expect("written");
        let _ = std::fs::remove_file(&path);
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        assert!(svg.contains("reads: throughput"));
        assert!(svg.contains("healthz p99"));
    }
}
