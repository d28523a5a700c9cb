//! The usage chart: one bar per day, stacked by service, drawn as SVG on the server so the
//! page needs no script. The same numbers are in the table beside it.

use std::fmt::Write;

use crate::notices::templates::escape;

/// One day's bar: its label and each service's value, in the order of the legend.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub label: String,
    pub values: Vec<f64>,
}

/// Colours of the services, in turn; each reads against white (3:1 or more).
const PALETTE: &[&str] = &[
    "#2f4ad0", "#c2410c", "#047857", "#7e22ce", "#b91c1c", "#0e7490", "#4d7c0f", "#a16207",
];

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 260.0;
const LEFT: f64 = 64.0;
const BOTTOM: f64 = 36.0;
const TOP: f64 = 16.0;

pub fn palette(index: usize) -> &'static str {
    PALETTE[index % PALETTE.len()]
}

/// The chart of `bars`, stacked in the order of `services`, titled `title` for screen
/// readers.
pub fn svg(title: &str, services: &[String], bars: &[Bar]) -> String {
    let max = bars
        .iter()
        .map(|bar| bar.values.iter().sum::<f64>())
        .fold(0.0, f64::max);
    let scale_top = nice_ceiling(max);
    let plot_height = HEIGHT - TOP - BOTTOM;
    let slot = (WIDTH - LEFT) / bars.len().max(1) as f64;
    let bar_width = (slot * 0.7).max(1.0);
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" \
         aria-labelledby=\"chart-title\" class=\"chart\"><title id=\"chart-title\">{}</title>",
        escape(title)
    );
    // The axis: zero and the top of the scale.
    for (value, y) in [(0.0, HEIGHT - BOTTOM), (scale_top, TOP)] {
        let _ = write!(
            out,
            "<line x1=\"{LEFT}\" x2=\"{WIDTH}\" y1=\"{y}\" y2=\"{y}\" stroke=\"#767676\" stroke-width=\"1\"/>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-size=\"12\" fill=\"#333\">{}</text>",
            LEFT - 6.0,
            y + 4.0,
            format_number(value)
        );
    }
    let label_every = (bars.len() / 10).max(1);
    for (i, bar) in bars.iter().enumerate() {
        let x = LEFT + slot * i as f64 + (slot - bar_width) / 2.0;
        let mut y = HEIGHT - BOTTOM;
        for (s, value) in bar.values.iter().enumerate() {
            if *value <= 0.0 || scale_top <= 0.0 {
                continue;
            }
            let h = value / scale_top * plot_height;
            y -= h;
            let service = services.get(s).map_or("", String::as_str);
            let _ = write!(
                out,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar_width:.1}\" height=\"{h:.1}\" fill=\"{}\">\
                 <title>{}: {} {}</title></rect>",
                palette(s),
                escape(&bar.label),
                escape(service),
                format_number(*value)
            );
        }
        if i % label_every == 0 {
            let _ = write!(
                out,
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\" font-size=\"11\" fill=\"#333\">{}</text>",
                x + bar_width / 2.0,
                HEIGHT - BOTTOM + 16.0,
                escape(&bar.label)
            );
        }
    }
    out.push_str("</svg>");
    out
}

/// The smallest 1, 2 or 5 times a power of ten at or above `value`.
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 {
        return 1.0;
    }
    let power = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|step| step * power)
        .find(|candidate| *candidate >= value)
        .unwrap_or(10.0 * power)
}

fn format_number(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scale_rounds_up_to_a_readable_number() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(120.0), 200.0);
        assert_eq!(nice_ceiling(4_500.0), 5_000.0);
        assert_eq!(nice_ceiling(5_000.0), 5_000.0);
    }

    #[test]
    fn bars_stack_by_service_with_titles_and_escaped_names() {
        let services = vec!["speech".to_owned(), "<tts>".to_owned()];
        let bars = vec![
            Bar {
                label: "1 Nov".into(),
                values: vec![30.0, 70.0],
            },
            Bar {
                label: "2 Nov".into(),
                values: vec![0.0, 50.0],
            },
        ];
        let svg = svg("Credits used per day", &services, &bars);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("<title id=\"chart-title\">Credits used per day</title>"));
        // Three non-empty segments; the zero one is not drawn.
        assert_eq!(svg.matches("<rect").count(), 3);
        assert!(svg.contains("1 Nov: &lt;tts&gt; 70"));
        assert!(!svg.contains("<tts>"));
        // 100 at most: the scale tops at 100, and a 70 bar is 70% of the plot.
        assert!(svg.contains(">100</text>"));
        let plot = HEIGHT - TOP - BOTTOM;
        assert!(svg.contains(&format!("height=\"{:.1}\"", 0.7 * plot)));
    }
}
