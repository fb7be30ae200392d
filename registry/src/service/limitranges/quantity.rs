//! Kubernetes resource quantities (`1Gi`, `140Mi`, `500M`, `1.5e3`, `100m`): parsed once into [`Quantity`], which
//! keeps the text as written (a LimitRange round-trips as given) and answers how many whole units it is
//! ([`Quantity::floor_units`]) exactly, for comparing with an image's size in bytes. Used by
//! [`super`] only; pure.

use std::fmt;
use std::str::FromStr;

/// What Kubernetes says about a malformed quantity.
pub const SYNTAX: &str = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

/// Longest exponent taken (`1e4096`): far past any byte count, short enough to compute exactly.
const MAX_EXPONENT: i64 = 4096;

/// A resource quantity: its text as written, and its value as sign, decimal digits, a power of ten and a power
/// of two (`1.5Gi` is 15 × 10⁻¹ × 2³⁰).
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Quantity {
    text: String,
    negative: bool,
    /// The significant digits, without a decimal point (`"15"` for `1.5Gi`).
    digits: Vec<u8>,
    pow10: i64,
    pow2: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{SYNTAX}")]
pub struct QuantityError;

impl Quantity {
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Below zero (`-1`; `-0` is not).
    pub fn is_negative(&self) -> bool {
        self.negative && self.digits.iter().any(|d| *d != 0)
    }

    /// The largest whole number of units not above the quantity (0 for a negative one), saturating at
    /// `u64::MAX`. An integer size exceeds the quantity exactly when it exceeds this.
    pub fn floor_units(&self) -> u64 {
        if self.is_negative() {
            return 0;
        }
        // The integer part, then the fraction, as decimal digits; the fraction only matters once doubled.
        let (mut int, mut frac): (Vec<u8>, Vec<u8>) = if self.pow10 >= 0 {
            let mut int = self.digits.clone();
            int.extend(std::iter::repeat_n(0, self.pow10 as usize));
            (int, Vec::new())
        } else {
            let shift = (-self.pow10) as usize;
            if shift >= self.digits.len() {
                let mut frac = vec![0; shift - self.digits.len()];
                frac.extend(&self.digits);
                (Vec::new(), frac)
            } else {
                let (i, f) = self.digits.split_at(self.digits.len() - shift);
                (i.to_vec(), f.to_vec())
            }
        };
        for _ in 0..self.pow2 {
            let mut carry = 0;
            for d in frac.iter_mut().rev() {
                let v = *d * 2 + carry;
                (*d, carry) = (v % 10, v / 10);
            }
            for d in int.iter_mut().rev() {
                let v = *d * 2 + carry;
                (*d, carry) = (v % 10, v / 10);
            }
            if carry > 0 {
                int.insert(0, carry);
            }
        }
        let significant: Vec<u8> = int.into_iter().skip_while(|d| *d == 0).collect();
        if significant.len() > 20 {
            return u64::MAX;
        }
        significant.iter().try_fold(0u64, |n, d| n.checked_mul(10)?.checked_add(u64::from(*d))).unwrap_or(u64::MAX)
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Quantity, QuantityError> {
        let (negative, rest) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let number_len = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(number_len);
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(QuantityError);
        }
        let (pow10, pow2) = match suffix {
            "" => (0, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            "Ki" => (0, 10),
            "Mi" => (0, 20),
            "Gi" => (0, 30),
            "Ti" => (0, 40),
            "Pi" => (0, 50),
            "Ei" => (0, 60),
            exp if exp.starts_with(['e', 'E']) => {
                let e = &exp[1..];
                let unsigned = e.strip_prefix(['+', '-']).unwrap_or(e);
                if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(QuantityError);
                }
                match e.parse::<i64>() {
                    Ok(n) if n.abs() <= MAX_EXPONENT => (n, 0),
                    _ => return Err(QuantityError),
                }
            }
            _ => return Err(QuantityError),
        };
        let digits: Vec<u8> = int.bytes().chain(frac.bytes()).map(|b| b - b'0').collect();
        Ok(Quantity { text: s.to_owned(), negative, digits, pow10: pow10 - frac.len() as i64, pow2 })
    }
}

impl TryFrom<String> for Quantity {
    type Error = QuantityError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Quantity> for String {
    fn from(q: Quantity) -> String {
        q.text
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Quantity({:?})", self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_in_whole_units() {
        let table: &[(&str, u64)] = &[
            ("1000", 1000),
            ("1Gi", 1 << 30),
            ("140Mi", 140 << 20),
            ("500M", 500_000_000),
            ("1.5Gi", 3 << 29),
            ("0.5Ki", 512),
            ("1.0001Ki", 1024),
            ("1e3", 1000),
            ("1E3", 1000),
            ("1E", 1_000_000_000_000_000_000),
            ("2.5e-1", 0),
            ("1500m", 1),
            ("100m", 0),
            (".5k", 500),
            ("5.", 5),
            ("+7", 7),
            ("-0", 0),
            ("0", 0),
            ("16Ei", u64::MAX),
            ("1e30", u64::MAX),
            ("18446744073709551615", u64::MAX),
            ("18446744073709551614", u64::MAX - 1),
            ("0.000000000000000000000000000001Ei", 0),
            ("1.2345678901234567890123Ki", 1264),
        ];
        for (text, units) in table {
            let q: Quantity = text.parse().unwrap_or_else(|_| panic!("{text} parses"));
            assert_eq!(q.floor_units(), *units, "{text}");
            assert_eq!(q.as_str(), *text, "kept as written");
        }
        assert!("-1Gi".parse::<Quantity>().unwrap().is_negative());
        assert!(!"-0".parse::<Quantity>().unwrap().is_negative());
    }

    #[test]
    fn malformed_quantities() {
        for bad in ["", "Gi", "1Gx", "1 Gi", "1.2.3", "1e", "1e+", "1ee3", "1Kii", "-", ".", "1gi", "1e99999", "0x10"] {
            assert_eq!(bad.parse::<Quantity>(), Err(QuantityError), "{bad:?}");
        }
        let q: Result<Quantity, _> = serde_json::from_str("\"1Gx\"");
        assert!(q.is_err());
        let q: Quantity = serde_json::from_str("\"2Mi\"").unwrap();
        assert_eq!(serde_json::to_string(&q).unwrap(), "\"2Mi\"");
    }
}
