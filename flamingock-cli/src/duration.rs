//! Durations as people write and read them: `30s`, `5m` on the command
//! line; `286 ms`, `1.2 s` in output.

use std::time::Duration;

/// Parses `500ms`, `30s`, `1.5s`, `5m`, `1h` (a unit is required, so `30`
/// is not silently taken as milliseconds or seconds).
pub(crate) fn parse(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("'{s}' has no unit: write e.g. 500ms, 30s, 5m or 1h"))?;
    let (number, unit) = t.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("'{s}' is not a duration such as 500ms, 30s, 5m or 1h"))?;
    let scale = match unit.trim() {
        "ms" => 0.001,
        "s" | "sec" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("'{s}': unknown unit '{other}' (use ms, s, m or h)")),
    };
    let d = Duration::try_from_secs_f64(n * scale).map_err(|_| format!("'{s}' is out of range"))?;
    if d < Duration::from_millis(1) {
        return Err(format!("'{s}' is shorter than 1ms"));
    }
    Ok(d)
}

/// For output: rounded, e.g. `286 ms`, `1.2 s` (core's formatting, so the
/// CLI and a printed [`RunReport`](flamingock_core::RunReport) agree).
pub(crate) fn show(d: Duration) -> String {
    flamingock_core::report::format_duration(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_refuses_bare_numbers() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["30", "", "s", "5 weeks", "0s", "-1s", "1.2.3s"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
