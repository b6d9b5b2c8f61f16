//! What an eBPF object holds, read from its ELF symbol table, and the check
//! that the shipped object holds netmon's program and maps and nothing of
//! the benches.
//!
//! aya names programs, maps and globals after their symbols: a program is a
//! function symbol in a program section (`xdp`, `classifier`, ...; not
//! `.text`), a map a symbol in `maps` (or BTF-style `.maps`), a global a
//! data symbol in `.rodata`/`.data`/`.bss`.

use std::path::Path;

use anyhow::{Context, Result, bail};
use netmon_common::{
    CLOCK_GLOBAL, COUNTERS_MAP, EVICT_POS_MAP, EVICTED_MAP, FLOW_SLOTS_MAP, RTT_PENDING_MAP,
    RTT_SAMPLES_MAP, TC_PROGRAM, XDP_PROGRAM, bench,
};
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

/// Programs of the shipped object: netmon's XDP (ingress) and TC (egress)
/// programs.
const SHIPPED_PROGRAMS: &[&str] = &[XDP_PROGRAM, TC_PROGRAM];
/// Maps the shipped object may hold: the counting code's, passive RTT's
/// and aya-log's.
const SHIPPED_MAPS: &[&str] = &[
    COUNTERS_MAP,
    FLOW_SLOTS_MAP,
    EVICTED_MAP,
    EVICT_POS_MAP,
    RTT_PENDING_MAP,
    RTT_SAMPLES_MAP,
    "AYA_LOGS",
];

/// Whether `name` belongs to the bench object (netmon-common's `bench`
/// module); named as such in the failure when it turns up in the shipped
/// object.
fn is_bench_name(name: &str) -> bool {
    bench::PROGRAMS.contains(&name) || bench::SYMBOLS.contains(&name)
}

/// The programs, maps and globals of an object, each sorted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    pub programs: Vec<String>,
    pub maps: Vec<String>,
    pub globals: Vec<String>,
    /// The globals in `.bss`, and its size in bytes.
    pub bss: Vec<String>,
    pub bss_size: u64,
}

/// Size of the clock (a `u64`), the whole of the shipped object's `.bss`.
const CLOCK_SIZE: u64 = size_of::<u64>() as u64;

pub fn inventory(elf: &[u8]) -> Result<Inventory> {
    let file = object::File::parse(elf).context("not an ELF object")?;
    let mut inv = Inventory::default();
    for sym in file.symbols() {
        let Some(index) = sym.section_index() else {
            continue;
        };
        let Ok(name) = sym.name() else { continue };
        if name.is_empty() {
            continue;
        }
        let section = file.section_by_index(index)?;
        let section = section.name().unwrap_or_default();
        let list = match (sym.kind(), section) {
            (SymbolKind::Text, s) if s != ".text" && !s.starts_with(".text.") => &mut inv.programs,
            (SymbolKind::Data | SymbolKind::Unknown, "maps" | ".maps") => &mut inv.maps,
            (SymbolKind::Data, s)
                if sym.is_global()
                    && (s.starts_with(".rodata")
                        || s.starts_with(".data")
                        || s.starts_with(".bss")) =>
            {
                if s.starts_with(".bss") {
                    inv.bss.push(name.to_owned());
                }
                &mut inv.globals
            }
            _ => continue,
        };
        list.push(name.to_owned());
    }
    inv.bss_size = file
        .sections()
        .filter(|s| s.name().is_ok_and(|n| n.starts_with(".bss")))
        .map(|s| s.size())
        .sum();
    for list in [
        &mut inv.programs,
        &mut inv.maps,
        &mut inv.globals,
        &mut inv.bss,
    ] {
        list.sort();
        list.dedup();
    }
    Ok(inv)
}

/// What is wrong with `inv` as the shipped object: every program but
/// netmon's, every map the counting code does not use, every bench name.
pub fn shipped_problems(inv: &Inventory) -> Vec<String> {
    let mut problems = Vec::new();
    let bench = |n: &str| {
        if is_bench_name(n) {
            " (a bench name)"
        } else {
            ""
        }
    };
    for p in &inv.programs {
        if !SHIPPED_PROGRAMS.contains(&p.as_str()) {
            problems.push(format!("program {p}{}", bench(p)));
        }
    }
    for p in SHIPPED_PROGRAMS {
        if !inv.programs.iter().any(|q| q == p) {
            problems.push(format!("no program {p}"));
        }
    }
    for m in &inv.maps {
        if !SHIPPED_MAPS.contains(&m.as_str()) {
            problems.push(format!("map {m}{}", bench(m)));
        }
    }
    for g in &inv.globals {
        if is_bench_name(g) {
            problems.push(format!("global {g} (a bench name)"));
        }
    }
    if inv.bss != [CLOCK_GLOBAL] || inv.bss_size != CLOCK_SIZE {
        // Userspace writes the whole of `.bss` as the clock (CLOCK_MAP).
        problems.push(format!(
            ".bss holds {:?} in {} bytes, not {CLOCK_GLOBAL} alone ({CLOCK_SIZE} bytes)",
            inv.bss, inv.bss_size
        ));
    }
    problems
}

/// Fails, naming each offender, unless the object at `path` holds netmon's
/// program, the counting maps and nothing of the benches.
pub fn check_shipped(path: &Path) -> Result<Inventory> {
    let elf = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let inv = inventory(&elf).with_context(|| format!("reading {}", path.display()))?;
    let problems = shipped_problems(&inv);
    if !problems.is_empty() {
        bail!(
            "the shipped object {} holds what it must not: {}",
            path.display(),
            problems.join(", ")
        );
    }
    Ok(inv)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(programs: &[&str], maps: &[&str], globals: &[&str]) -> Inventory {
        let own = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
        Inventory {
            programs: own(programs),
            maps: own(maps),
            globals: own(globals),
            bss: vec![CLOCK_GLOBAL.to_owned()],
            bss_size: CLOCK_SIZE,
        }
    }

    #[test]
    fn the_shipped_set_passes_and_bench_names_are_named() {
        let ok = inv(
            &["netmon_tc", "netmon_xdp"],
            &[
                "AYA_LOGS",
                "COUNTERS",
                "EVICT_POS",
                "EVICTED",
                "FLOW_SLOTS",
                "RTT_PENDING",
                "RTT_SAMPLES",
            ],
            &[
                "CLOCK",
                "HASH_SEEDS",
                "RING_MASK",
                "RING_SHIFT",
                "SLOT_MASK",
                "SLOT_SHIFT",
            ],
        );
        assert!(shipped_problems(&ok).is_empty());
        let bad = inv(
            &["netmon_floor", "netmon_tc", "netmon_tc_floor", "netmon_xdp"],
            &["BENCH_TAIL", "COUNTERS", "OTHER"],
            &["BENCH_CYCLE"],
        );
        assert_eq!(
            shipped_problems(&bad),
            [
                "program netmon_floor (a bench name)",
                "program netmon_tc_floor (a bench name)",
                "map BENCH_TAIL (a bench name)",
                "map OTHER",
                "global BENCH_CYCLE (a bench name)"
            ]
        );
        assert_eq!(
            shipped_problems(&inv(&[], &[], &[])),
            ["no program netmon_xdp", "no program netmon_tc"]
        );
        // Anything beside the clock in .bss would be overwritten by it.
        let mut crowded = ok;
        crowded.bss.push("OTHER".to_owned());
        crowded.bss_size = 16;
        assert_eq!(
            shipped_problems(&crowded),
            [".bss holds [\"CLOCK\", \"OTHER\"] in 16 bytes, not CLOCK alone (8 bytes)"]
        );
    }

    /// The objects `cargo xtask build` left, when there are any: the
    /// shipped one passes, and the bench one would not.
    #[test]
    fn the_built_objects_if_any() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace");
        let shipped = root.join(crate::EBPF_OBJECT);
        let bench = root.join(crate::BENCH_OBJECT);
        if !shipped.exists() || !bench.exists() {
            eprintln!("no objects built (cargo xtask build): skipped");
            return;
        }
        check_shipped(&shipped).expect("the shipped object");
        let b = inventory(&std::fs::read(&bench).expect("read")).expect("ELF");
        assert!(
            b.programs.iter().any(|p| p == "netmon_bench_new_flow"),
            "{b:?}"
        );
        assert!(!shipped_problems(&b).is_empty());
    }
}
