//! Other tools' checksums of a migration file, computed their way, so an
//! import can tell whether a file changed after that tool applied it.

use std::hash::{Hash, Hasher};

use flamingock_core::import::Tool;
use sha2::{Digest, Sha384};

/// `tool`'s checksum(s) of the file `file_name` (its name in the tool's
/// layout) holding `content` exactly as read; see
/// [`SqlFile::tool_checksums`](crate::SqlFile::tool_checksums).
pub(crate) fn of(tool: Tool, file_name: &str, content: &str) -> Vec<String> {
    match tool {
        Tool::Sqlx => vec![sqlx(content)],
        Tool::Flyway => vec![flyway(content).to_string()],
        Tool::Refinery => refinery(file_name, content),
        _ => Vec::new(),
    }
}

/// sqlx: SHA-384 of the content, lower-case hex (PostgreSQL's
/// `encode(checksum, 'hex')`).
fn sqlx(content: &str) -> String {
    Sha384::digest(content.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Flyway: CRC-32 over each line's UTF-8 bytes without its line ending
/// (`\n`, `\r` or `\r\n`, as Java's `readLine` splits), a byte-order mark
/// dropped from the first line, as a signed 32-bit number.
fn flyway(content: &str) -> i32 {
    const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
    let mut digest = CRC.digest();
    let content = content.strip_prefix('\u{feff}').unwrap_or(content);
    for line in content.split(['\n', '\r']) {
        // "\r\n" splits into a line and an empty one: empty lines add nothing.
        digest.update(line.as_bytes());
    }
    digest.finalize() as i32
}

/// refinery: SipHash-1-3 with keys (0, 0) of the name (the word characters
/// after `__`), the version and the SQL, each fed as Rust's `Hash` feeds
/// it; the version as `i32` (refinery's default) and as `i64` (its
/// `int8-versions` feature). None for a name refinery would not read.
fn refinery(file_name: &str, content: &str) -> Vec<String> {
    let stem = file_name.strip_suffix(".sql").unwrap_or(file_name);
    let Some(rest) = stem.strip_prefix('V').or_else(|| stem.strip_prefix('U')) else {
        return Vec::new();
    };
    let Some((version, tail)) = rest.split_once("__") else {
        return Vec::new();
    };
    let name: String = tail
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if name.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
        return Vec::new();
    }
    let hash = |feed_version: &dyn Fn(&mut siphasher::sip::SipHasher13)| {
        let mut h = siphasher::sip::SipHasher13::new();
        name.as_str().hash(&mut h);
        feed_version(&mut h);
        content.hash(&mut h);
        h.finish().to_string()
    };
    let mut sums = Vec::new();
    if let Ok(v) = version.parse::<i32>() {
        sums.push(hash(&|h| v.hash(h)));
    }
    if let Ok(v) = version.parse::<i64>() {
        sums.push(hash(&|h| v.hash(h)));
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_are_the_tools_own() {
        // refinery's own test migration and the checksum refinery-core
        // 0.10.1 computes for it.
        let sums = refinery(
            "V1__initial.sql",
            "CREATE TABLE persons (id int, name varchar(255), city varchar(255));",
        );
        assert_eq!(sums[0], "9011118159008407467");
        assert_eq!(sums.len(), 2, "i32 and i64 versions");
        // The name stops at the first non-word character, as refinery's regex does.
        assert_eq!(
            refinery("V1__initial.sql", "x"),
            refinery("V1__initial-copy.sql", "x")
        );
        assert!(refinery("V1.1__x.sql", "x").is_empty());
        // CRC-32's check value; Flyway hashes lines without their endings.
        assert_eq!(flyway("123456789") as u32, 0xCBF4_3926);
        assert_eq!(flyway("1234\n56789"), flyway("1234\r\n56789\n"));
        assert_eq!(flyway("\u{feff}123456789\n\n"), flyway("123456789"));
        assert_eq!(flyway(""), 0);
        assert_eq!(
            sqlx(""),
            "38b060a751ac96384cd9327eb1b1e36a21fdb71114be07434c0cc7bf63f6e1da274edebfe76f65fbd51ad2f14898b95b"
        );
    }
}
