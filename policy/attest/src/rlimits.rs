//! The sandbox's resource limits, as it reports them (`/proc/self/limits`, parsed by the
//! worker), against the plan (`bulkhead_policy::rlimits::plan`, re-planned by the controller).

use bulkhead_policy::rlimits::{show, PlannedRlimit, Resource, INFINITY};
use bulkhead_shared::RlimitSeen;

/// The row's name in `/proc/<pid>/limits`.
pub fn proc_name(r: Resource) -> &'static str {
    match r {
        Resource::Core => "Max core file size",
        Resource::Nofile => "Max open files",
        Resource::Rtprio => "Max realtime priority",
        Resource::Nice => "Max nice priority",
        Resource::Memlock => "Max locked memory",
        Resource::Msgqueue => "Max msgqueue size",
        Resource::Sigpending => "Max pending signals",
        Resource::Fsize => "Max file size",
        Resource::Stack => "Max stack size",
        Resource::As => "Max address space",
    }
}

/// Every row name of `/proc/<pid>/limits`, in the kernel's order.
const PROC_NAMES: [&str; 16] = [
    "Max cpu time",
    "Max file size",
    "Max data size",
    "Max stack size",
    "Max core file size",
    "Max resident set",
    "Max processes",
    "Max open files",
    "Max locked memory",
    "Max address space",
    "Max file locks",
    "Max pending signals",
    "Max msgqueue size",
    "Max nice priority",
    "Max realtime priority",
    "Max realtime timeout",
];

/// Parses `/proc/<pid>/limits` (`unlimited` = [`INFINITY`]). Unknown rows are skipped.
pub fn parse_proc_limits(text: &str) -> Vec<RlimitSeen> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(name) = PROC_NAMES.iter().find(|n| line.starts_with(**n)) else {
            continue;
        };
        let mut fields = line[name.len()..].split_whitespace();
        let value = |f: Option<&str>| match f {
            Some("unlimited") => Some(INFINITY),
            Some(v) => v.parse().ok(),
            None => None,
        };
        if let (Some(soft), Some(hard)) = (value(fields.next()), value(fields.next())) {
            out.push(RlimitSeen {
                name: (*name).to_string(),
                soft,
                hard,
            });
        }
    }
    out
}

/// Compares what the sandbox reports with the plan: every planned limit must be present, at or
/// below the plan (exactly the plan for an exact one). Returns what is wrong.
pub fn check(seen: &[RlimitSeen], plan: &[PlannedRlimit]) -> Vec<String> {
    let mut bad = Vec::new();
    for p in plan {
        let name = proc_name(p.resource);
        let Some(s) = seen.iter().find(|s| s.name == name) else {
            bad.push(format!("{} is not reported", p.resource.name()));
            continue;
        };
        let ok = if p.exact {
            s.soft == p.soft && s.hard == p.hard
        } else {
            s.soft <= p.soft && s.hard <= p.hard && s.soft <= s.hard
        };
        if !ok {
            bad.push(format!(
                "{} is {}/{}, the policy allows {}/{}",
                p.resource.name(),
                show(s.soft),
                show(s.hard),
                show(p.soft),
                show(p.hard)
            ));
        }
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_policy::default_limits;
    use bulkhead_policy::rlimits::plan;

    const LIMITS: &str = "\
Limit                     Soft Limit           Hard Limit           Units     
Max cpu time              unlimited            unlimited            seconds   
Max file size             unlimited            unlimited            bytes     
Max data size             unlimited            unlimited            bytes     
Max stack size            8388608              unlimited            bytes     
Max core file size        0                    0                    bytes     
Max resident set          unlimited            unlimited            bytes     
Max processes             95432                95432                processes 
Max open files            4096                 4096                 files     
Max locked memory         65536                65536                bytes     
Max address space         unlimited            unlimited            bytes     
Max file locks            unlimited            unlimited            locks     
Max pending signals       4096                 4096                 signals   
Max msgqueue size         262144               262144               bytes     
Max nice priority         0                    0                    
Max realtime priority     0                    0                    
Max realtime timeout      unlimited            unlimited            us        
";

    #[test]
    fn parses_proc_limits() {
        let seen = parse_proc_limits(LIMITS);
        assert_eq!(seen.len(), 16);
        let rt = seen
            .iter()
            .find(|s| s.name == "Max realtime priority")
            .unwrap();
        assert_eq!((rt.soft, rt.hard), (0, 0));
        let stack = seen.iter().find(|s| s.name == "Max stack size").unwrap();
        assert_eq!((stack.soft, stack.hard), (8 << 20, INFINITY));
        // "Max realtime timeout" is not mistaken for "Max realtime priority".
        assert_eq!(
            seen.iter()
                .filter(|s| s.name.starts_with("Max realtime"))
                .count(),
            2
        );
    }

    #[test]
    fn a_sandbox_with_the_planned_limits_passes() {
        let seen = parse_proc_limits(LIMITS);
        assert_eq!(check(&seen, &plan(&default_limits())), Vec::<String>::new());
    }

    #[test]
    fn an_inherited_rtprio_or_missing_row_or_wrong_nofile_is_refused() {
        let plan = plan(&default_limits());
        let mut seen = parse_proc_limits(LIMITS);
        let rt = seen
            .iter_mut()
            .find(|s| s.name == "Max realtime priority")
            .unwrap();
        rt.soft = 50;
        rt.hard = 99;
        let bad = check(&seen, &plan);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(bad[0].contains("RLIMIT_RTPRIO is 50/99"), "{bad:?}");

        let seen: Vec<_> = parse_proc_limits(LIMITS)
            .into_iter()
            .filter(|s| s.name != "Max nice priority")
            .collect();
        assert!(check(&seen, &plan)[0].contains("RLIMIT_NICE is not reported"));

        // NOFILE is exact: lower is as wrong as higher.
        let mut seen = parse_proc_limits(LIMITS);
        seen.iter_mut()
            .find(|s| s.name == "Max open files")
            .unwrap()
            .soft = 1024;
        assert!(check(&seen, &plan)[0].contains("RLIMIT_NOFILE"));
        // A ceiling below the plan (the caller's lower hard limit) is fine.
        let mut seen = parse_proc_limits(LIMITS);
        let m = seen
            .iter_mut()
            .find(|s| s.name == "Max locked memory")
            .unwrap();
        m.soft = 0;
        m.hard = 0;
        assert!(check(&seen, &plan).is_empty());
    }
}
