//! The FHIR reader on arbitrary text: a Bundle or resource (`parse_contents`), a prefetch value
//! (`parse_prefetch_value`, which is `parse_contents` except that `null` means "no data") and a single
//! resource (`parse_resource`). Invalid UTF-8 is skipped: every caller has a `&str` already.
//!
//! Beyond "no panic": a prefetch value that is not `null` reads exactly as `parse_contents` reads it.
#![no_main]

use dry_needling_cds::fhir::{parse_contents, parse_prefetch_value, parse_resource};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let contents = parse_contents(text, usize::MAX);
    let prefetch = parse_prefetch_value(text, usize::MAX);
    let _ = parse_resource(text);
    if let Some(prefetch) = prefetch {
        match (&contents, &prefetch) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a.resources, b.resources);
                assert_eq!((a.skipped, a.bundle, &a.next), (b.skipped, b.bundle, &b.next));
            }
            (Err(_), Err(_)) => {}
            _ => panic!(
                "parse_contents is {}, parse_prefetch_value is {}",
                contents.is_ok(),
                prefetch.is_ok()
            ),
        }
    }
});
