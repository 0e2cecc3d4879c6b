//! The value syntaxes of the directives' `key=value` parameters, as nginx
//! writes them: times (`20s`, `1m30s`), counts, fractions (`0.05` or `5%`),
//! `on|off`, names.

use super::ConfError;

/// The error for a value that is not what `key=` expects.
pub(super) fn invalid(key: &str, val: &str, want: &str) -> ConfError {
    ConfError::InvalidValue {
        key: key.to_string(),
        value: val.to_string(),
        expected: want.to_string(),
    }
}

/// Splits `key=value`.
pub(super) fn split(arg: &str) -> Result<(&str, &str), ConfError> {
    arg.split_once('=')
        .ok_or_else(|| ConfError::InvalidParameter(arg.to_string()))
}

/// Remembers each key seen; a second one is an error.
pub(super) fn once<'a>(seen: &mut Vec<&'a str>, key: &'a str) -> Result<(), ConfError> {
    if seen.contains(&key) {
        return Err(ConfError::DuplicateParameter(key.to_string()));
    }
    seen.push(key);
    Ok(())
}

/// A finite number.
pub(super) fn parse_f64(s: &str) -> Option<f64> {
    let x: f64 = s.parse().ok()?;
    x.is_finite().then_some(x)
}

/// A fraction written as a number ("0.05") or a percentage ("5%").
pub(super) fn parse_fraction(s: &str) -> Option<f64> {
    match s.strip_suffix('%') {
        Some(p) => parse_f64(p).map(|x| x / 100.0),
        None => parse_f64(s),
    }
}

/// An integer from `lo` to `hi`.
pub(super) fn parse_count(key: &str, val: &str, lo: usize, hi: usize) -> Result<usize, ConfError> {
    match val.parse::<usize>() {
        Ok(n) if (lo..=hi).contains(&n) => Ok(n),
        _ => Err(invalid(key, val, &format!("an integer from {lo} to {hi}"))),
    }
}

/// `on` or `off`.
pub(super) fn parse_on_off(key: &str, val: &str) -> Result<bool, ConfError> {
    match val {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(invalid(key, val, "\"on\" or \"off\"")),
    }
}

/// Parses an nginx time ("500ms", "20s", "1m30s", "2h"; a bare number is
/// seconds) into milliseconds, as nginx's `ngx_parse_time` does.
pub fn parse_time_ms(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let b = s.as_bytes();
    let mut i = 0;
    let mut total: u64 = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return None;
        }
        let n: u64 = s[start..i].parse().ok()?;
        let unit_start = i;
        while i < b.len() && b[i].is_ascii_alphabetic() {
            i += 1;
        }
        let mult: u64 = match &s[unit_start..i] {
            // a bare number is seconds, but only on its own
            "" if start == 0 && i == b.len() => 1000,
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(mult)?)?;
    }
    Some(total)
}

/// A time from `min_ms` to a day.
pub(super) fn parse_time(key: &str, val: &str, min_ms: u64) -> Result<u64, ConfError> {
    match parse_time_ms(val) {
        Some(ms) if ms >= min_ms && ms <= 86_400_000 => Ok(ms),
        _ => Err(invalid(
            key,
            val,
            &format!("a time from {min_ms}ms to 1d, like \"20s\""),
        )),
    }
}

/// Names valid for endpoints: letters, digits, '_', '-', '.'.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time_ms("20s"), Some(20_000));
        assert_eq!(parse_time_ms("20"), Some(20_000));
        assert_eq!(parse_time_ms("500ms"), Some(500));
        assert_eq!(parse_time_ms("1m30s"), Some(90_000));
        assert_eq!(parse_time_ms("1h"), Some(3_600_000));
        for bad in ["", "s", "10x", "-1s", "1.5s", "10 s", "20s5"] {
            assert_eq!(parse_time_ms(bad), None, "{bad}");
        }
    }
}
