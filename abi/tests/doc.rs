//! `docs/ABI.md` against the crate: the version it states and its message
//! table must be the code's, so that the page cannot drift from the
//! contract it explains. Changing `ABI_VERSION` or a message kind fails
//! here until the page says what changed.

use std::collections::{BTreeMap, BTreeSet};

use wisp_abi::msg::Kind;
use wisp_abi::ABI_VERSION;

const DOC: &str = include_str!("../../docs/ABI.md");

/// [`Kind::ALL`], checked to hold every variant once.
fn all_kinds() -> Vec<Kind> {
    // The match stops compiling when a variant is added: list it there,
    // count it here, and add it to `Kind::ALL` and to the page.
    const VARIANTS: usize = 14;
    let _exhaustive = |kind: Kind| match kind {
        Kind::Ready
        | Kind::Stdout
        | Kind::Stderr
        | Kind::StdinRequest
        | Kind::Exit
        | Kind::Trap
        | Kind::Error
        | Kind::OutOfMemory
        | Kind::Sleep
        | Kind::FsCall
        | Kind::Request
        | Kind::Stdin
        | Kind::StdinEof
        | Kind::FsReply => (),
    };
    let distinct: BTreeSet<u32> = Kind::ALL.iter().map(|&k| k as u32).collect();
    assert_eq!(
        (Kind::ALL.len(), distinct.len()),
        (VARIANTS, VARIANTS),
        "Kind::ALL holds each of the {VARIANTS} variants once"
    );
    Kind::ALL.to_vec()
}

/// The rows of the table under "### Messages": kind value → (name,
/// direction).
fn message_table() -> BTreeMap<u32, (String, String)> {
    let section = DOC
        .split("\n### Messages\n")
        .nth(1)
        .expect("docs/ABI.md has a `### Messages` section");
    let section = section.split("\n#").next().unwrap_or(section);
    let mut rows = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `0x")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (value, name) = cells[1]
            .trim_matches('`')
            .split_once(' ')
            .unwrap_or_else(|| panic!("docs/ABI.md: a kind cell is `0xN Name`: {line}"));
        let value = u32::from_str_radix(value.trim_start_matches("0x"), 16)
            .unwrap_or_else(|e| panic!("docs/ABI.md: {value} is not hex ({e}): {line}"));
        let row = (name.to_string(), cells[2].to_string());
        assert!(
            rows.insert(value, row).is_none(),
            "docs/ABI.md lists kind {value:#x} twice"
        );
    }
    rows
}

#[test]
fn the_page_states_the_abi_version() {
    let statements: Vec<&str> = DOC.split("`ABI_VERSION` is ").skip(1).collect();
    assert_eq!(
        statements.len(),
        1,
        "docs/ABI.md states `ABI_VERSION` is N exactly once"
    );
    let digits: String = statements[0]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let stated: u32 = digits.parse().expect("a number follows `ABI_VERSION` is");
    assert_eq!(
        stated, ABI_VERSION,
        "docs/ABI.md says `ABI_VERSION` is {stated}, abi/src/lib.rs has {ABI_VERSION}: \
         say on the page what the new version changed"
    );
}

#[test]
fn the_message_table_lists_every_kind_with_its_value_and_direction() {
    let documented = message_table();
    let mut code = BTreeMap::new();
    for kind in all_kinds() {
        let value = kind as u32;
        assert_eq!(Kind::from_u32(value), Some(kind), "{kind:?} decodes");
        // Guest→host kinds are below 0x100, host→guest above (msg.rs).
        let direction = if value < 0x100 { "g→h" } else { "h→g" };
        code.insert(value, (format!("{kind:?}"), direction.to_string()));
    }
    assert_eq!(
        documented, code,
        "docs/ABI.md's message table (left) differs from `wisp_abi::msg::Kind` (right)"
    );
}

#[test]
fn nothing_decodes_that_is_not_a_kind() {
    // The kinds in use sit in 0x01.. and 0x101..; a value decoding outside
    // `all_kinds` would be a kind the page (and this test) does not know.
    let known: Vec<u32> = all_kinds().iter().map(|&k| k as u32).collect();
    for value in 0..0x1_0000 {
        if let Some(kind) = Kind::from_u32(value) {
            assert!(known.contains(&value), "{value:#x} decodes as {kind:?}");
        }
    }
}
