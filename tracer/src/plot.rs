//! Charts as PNG and SVG (feature `plot`): line charts and heatmaps drawn
//! by plotters, text in DejaVu Sans compiled into the binary (no system
//! fonts, no fontconfig). Used by `tracer lab --plot` and by the tests that
//! draw the Grafana dashboard's data.
//!
//! The feature is on in a source build and off in `cargo xtask dist`: the
//! node binary carries no plotting code.

use std::{path::Path, sync::Once};

use plotters::{
    coord::Shift,
    prelude::*,
    style::{FontStyle, register_font},
};

/// The one font family charts use (registered from the `dejavu` crate).
const FONT: &str = "sans-serif";
/// Height of the caption band under each chart, in pixels.
const CAPTION_HEIGHT: u32 = 52;

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("drawing {path}: {message}")]
    Draw { path: String, message: String },
    #[error("the bundled font could not be registered")]
    Font,
}

/// One named line: `(x, y)` points in x order.
#[derive(Clone, Debug, Default)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A heatmap: one row per bucket (bottom to top), one column per x step.
#[derive(Clone, Debug, Default)]
pub struct Heatmap {
    pub rows: Vec<String>,
    /// `(x, row, value)`; each cell spans `[x, x + x_step)`.
    pub cells: Vec<(f64, usize, f64)>,
    pub x_step: f64,
}

#[derive(Clone, Debug)]
pub enum Body {
    Lines(Vec<Series>),
    Heatmap(Heatmap),
}

/// A chart: title on top, caption (the run's parameters, the query) below.
#[derive(Clone, Debug)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub caption: String,
    pub body: Body,
    /// Cut the x axis here (a CDF's far tail would squeeze the rest into
    /// one pixel column); points beyond are left out.
    pub x_limit: Option<f64>,
}

fn register_fonts() -> Result<(), PlotError> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
            .map_err(|_| PlotError::Font);
    });
    result
}

/// Draws `charts` in a grid of `columns` into `path`: PNG when it ends in
/// `.png`, else SVG. Each chart gets `cell` pixels (width, height).
pub fn draw(
    path: &Path,
    charts: &[Chart],
    columns: usize,
    cell: (u32, u32),
) -> Result<(), PlotError> {
    register_fonts()?;
    let columns = columns.max(1);
    let rows = charts.len().div_ceil(columns).max(1);
    let size = (
        cell.0 * columns as u32,
        cell.1 * u32::try_from(rows).unwrap_or(u32::MAX),
    );
    let failed = |message: String| PlotError::Draw {
        path: path.display().to_string(),
        message,
    };
    if path.extension().is_some_and(|e| e == "png") {
        let root = BitMapBackend::new(path, size).into_drawing_area();
        draw_grid(&root, charts, rows, columns).map_err(|e| failed(e.to_string()))?;
        root.present().map_err(|e| failed(e.to_string()))
    } else {
        let root = SVGBackend::new(path, size).into_drawing_area();
        draw_grid(&root, charts, rows, columns).map_err(|e| failed(e.to_string()))?;
        root.present().map_err(|e| failed(e.to_string()))
    }
}

type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn draw_grid<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    charts: &[Chart],
    rows: usize,
    columns: usize,
) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    for (area, chart) in root.split_evenly((rows, columns)).iter().zip(charts) {
        draw_chart(area, chart)?;
    }
    Ok(())
}

fn draw_chart<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, chart: &Chart) -> DrawResult<DB> {
    let height = area.dim_in_pixel().1;
    let (plot, caption) = area.split_vertically(height.saturating_sub(CAPTION_HEIGHT));
    for (i, line) in wrap(&chart.caption, 110).iter().take(3).enumerate() {
        caption.draw(&Text::new(
            line.clone(),
            (10, 2 + 16 * i as i32),
            (FONT, 12).into_font().color(&BLACK.mix(0.7)),
        ))?;
    }
    match &chart.body {
        Body::Lines(series) => draw_lines(&plot, chart, series),
        Body::Heatmap(map) => draw_heatmap(&plot, chart, map),
    }
}

/// Splits `text` into lines of at most `width` characters at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let last = lines.last_mut().expect("one line");
        if !last.is_empty() && last.len() + word.len() >= width {
            lines.push(word.to_owned());
        } else {
            if !last.is_empty() {
                last.push(' ');
            }
            last.push_str(word);
        }
    }
    lines
}

/// The range of `values`, widened when empty or flat so an axis can be
/// drawn.
fn span(values: impl Iterator<Item = f64>, from_zero: bool) -> std::ops::Range<f64> {
    let (mut low, mut high) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
            (l.min(v), h.max(v))
        });
    if !low.is_finite() {
        (low, high) = (0.0, 1.0);
    }
    if from_zero {
        low = low.min(0.0);
    }
    if high <= low {
        high = low + 1.0;
    }
    low..high + (high - low) * 0.05
}

fn draw_lines<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    chart: &Chart,
    series: &[Series],
) -> DrawResult<DB> {
    let limit = chart.x_limit.unwrap_or(f64::INFINITY);
    let points = || {
        series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(move |p| p.0 <= limit)
    };
    let x = span(points().map(|p| p.0), false);
    let y = span(points().map(|p| p.1), true);
    let mut cc = ChartBuilder::on(area)
        .caption(&chart.title, (FONT, 17))
        .margin(8)
        .x_label_area_size(34)
        .y_label_area_size(58)
        .build_cartesian_2d(x, y)?;
    cc.configure_mesh()
        .x_desc(&chart.x_label)
        .y_desc(&chart.y_label)
        .label_style((FONT, 11))
        .axis_desc_style((FONT, 12))
        // No fine grid: clearer, and a PNG a third the size.
        .light_line_style(TRANSPARENT)
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        cc.draw_series(LineSeries::new(
            s.points.iter().copied().filter(|p| p.0 <= limit),
            color.stroke_width(2),
        ))?
        .label(s.name.clone())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], color.stroke_width(2)));
    }
    if !series.is_empty() {
        cc.configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font((FONT, 11))
            .draw()?;
    }
    Ok(())
}

fn draw_heatmap<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    chart: &Chart,
    map: &Heatmap,
) -> DrawResult<DB> {
    let x = span(
        map.cells
            .iter()
            .map(|c| c.0)
            .chain(map.cells.iter().map(|c| c.0 + map.x_step)),
        false,
    );
    let max = map.cells.iter().map(|c| c.2).fold(0.0_f64, f64::max);
    let rows = map.rows.len().max(1);
    let mut cc = ChartBuilder::on(area)
        .caption(&chart.title, (FONT, 17))
        .margin(8)
        .x_label_area_size(34)
        .y_label_area_size(70)
        .build_cartesian_2d(x, 0.0..rows as f64)?;
    let label = |v: &f64| {
        let row = v.floor() as usize;
        map.rows.get(row).cloned().unwrap_or_default()
    };
    cc.configure_mesh()
        .x_desc(&chart.x_label)
        .y_desc(&chart.y_label)
        .y_labels(rows + 1)
        .y_label_formatter(&label)
        .label_style((FONT, 11))
        .axis_desc_style((FONT, 12))
        .disable_mesh()
        .draw()?;
    cc.draw_series(
        map.cells
            .iter()
            .filter(|c| c.2 > 0.0)
            .map(|&(x, row, value)| {
                // Light yellow (few) to dark red (most): the heatmap palette
                // Grafana uses by default for histograms.
                let share = if max > 0.0 { value / max } else { 0.0 };
                let color = HSLColor(0.15 * (1.0 - share), 0.9, 0.75 - 0.45 * share);
                Rectangle::new(
                    [(x, row as f64), (x + map.x_step, row as f64 + 1.0)],
                    color.filled(),
                )
            }),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_keeps_words_whole() {
        assert_eq!(wrap("a bb ccc dddd", 6), ["a bb", "ccc", "dddd"]);
        assert_eq!(wrap("", 10), [""]);
    }

    #[test]
    fn span_of_nothing_or_one_value_is_drawable() {
        assert_eq!(span([].into_iter(), false), 0.0..1.05);
        let one = span([3.0].into_iter(), true);
        assert!(one.start == 0.0 && one.end > 3.0);
    }

    #[test]
    fn draws_png_and_svg_with_the_bundled_font() {
        let dir = std::env::temp_dir().join(format!("tracer-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let chart = Chart {
            title: "title".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            caption: "caption words".into(),
            x_limit: None,
            body: Body::Lines(vec![Series {
                name: "line".into(),
                points: vec![(0.0, 1.0), (1.0, 2.0)],
            }]),
        };
        let heat = Chart {
            body: Body::Heatmap(Heatmap {
                rows: vec!["1 ms".into(), "10 ms".into()],
                cells: vec![(0.0, 0, 1.0), (1.0, 1, 3.0)],
                x_step: 1.0,
            }),
            ..chart.clone()
        };
        for name in ["c.png", "c.svg"] {
            let path = dir.join(name);
            draw(&path, &[chart.clone(), heat.clone()], 2, (400, 300)).expect("draw");
            let bytes = std::fs::read(&path).expect("written");
            assert!(bytes.len() > 1000, "{name}: {} bytes", bytes.len());
        }
        let svg = std::fs::read_to_string(dir.join("c.svg")).expect("svg");
        let png = std::fs::read(dir.join("c.png")).expect("png");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            svg.contains("caption words") && svg.contains("\nline\n"),
            "{svg}"
        );
        assert_eq!(&png[1..4], b"PNG");
    }
}
