//! Which of Postfix's queue managers rqmgr stands in for, and so the name
//! it logs under: `qmgr` (preemptive scheduling) or `oqmgr` (the older,
//! non-preemptive one).
//!
//! Under the file name of either (as in a test instance, or an operator's
//! copy), the name decides, as with Postfix. Installed under its own name
//! (`rqmgr` in master.cf, see rqmgrctl), the parameter
//! `rqmgr_scheduler` (main.cf or master.cf `-o`, default `qmgr`) decides;
//! either way the log lines read `postfix/qmgr[pid]` or
//! `postfix/oqmgr[pid]`, as the tools that parse them expect.

/// The parameter that chooses the role under any other file name.
pub(crate) const SCHEDULER_PARAM: &str = "rqmgr_scheduler";

/// The role: the process name to log as. `program` is the base name rqmgr
/// was started under; `param` the value of [`SCHEDULER_PARAM`], if set.
pub(crate) fn queue_manager_name(
    program: &str,
    param: Option<&str>,
) -> Result<&'static str, String> {
    match program {
        "qmgr" => return Ok("qmgr"),
        "oqmgr" => return Ok("oqmgr"),
        _ => {}
    }
    match param.map(str::trim) {
        None | Some("" | "qmgr") => Ok("qmgr"),
        Some("oqmgr") => Ok("oqmgr"),
        Some(other) => Err(format!(
            "invalid {SCHEDULER_PARAM} value: \"{other}\" (use qmgr or oqmgr)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_name_decides_for_the_stock_names() {
        assert_eq!(queue_manager_name("qmgr", Some("oqmgr")), Ok("qmgr"));
        assert_eq!(queue_manager_name("oqmgr", None), Ok("oqmgr"));
    }

    #[test]
    fn the_parameter_decides_under_any_other_name() {
        assert_eq!(queue_manager_name("rqmgr", None), Ok("qmgr"));
        assert_eq!(queue_manager_name("rqmgr", Some("")), Ok("qmgr"));
        assert_eq!(queue_manager_name("rqmgr", Some("oqmgr")), Ok("oqmgr"));
        assert_eq!(queue_manager_name("rqmgr", Some(" qmgr ")), Ok("qmgr"));
        let bad = queue_manager_name("rqmgr", Some("nqmgr")).unwrap_err();
        assert_eq!(
            bad,
            "invalid rqmgr_scheduler value: \"nqmgr\" (use qmgr or oqmgr)"
        );
    }
}
