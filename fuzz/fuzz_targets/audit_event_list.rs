//! Audit batches as the API server's webhook backend (or a forger with a token) posts them: an
//! `audit.k8s.io/v1` EventList, each event turned into a record or skipped; nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reckon::audit::model::{AuditRecord, EventList};

fuzz_target!(|data: &[u8]| {
    if let Ok(list) = serde_json::from_slice::<EventList>(data) {
        for event in list.items {
            if let Ok(record) = AuditRecord::from_event(event) {
                let _ = record.weight();
            }
        }
    }
});
