//! The instance's configuration files: main.cf and master.cf as the
//! harness writes them, the files `postfix start` needs beside them, and
//! what `postfix check` may say about them.

use super::*;

/// The default master.cf: Debian's entries for the services a test needs,
/// all without chroot (the queue manager line is added separately).
const MASTER_CF: &[&str] = &[
    "pickup    unix  n       -       n       60      1       pickup",
    "cleanup   unix  n       -       n       -       0       cleanup",
    "rewrite   unix  -       -       n       -       -       trivial-rewrite",
    "bounce    unix  -       -       n       -       0       bounce",
    "defer     unix  -       -       n       -       0       bounce",
    "trace     unix  -       -       n       -       0       bounce",
    "verify    unix  -       -       n       -       1       verify",
    "flush     unix  n       -       n       1000?   0       flush",
    "proxymap  unix  -       -       n       -       -       proxymap",
    "proxywrite unix -       -       n       -       1       proxymap",
    "smtp      unix  -       -       n       -       -       smtp",
    "relay     unix  -       -       n       -       -       smtp",
    "showq     unix  n       -       n       -       -       showq",
    "error     unix  -       -       n       -       -       error",
    "retry     unix  -       -       n       -       -       error",
    "discard   unix  -       -       n       -       -       discard",
    "local     unix  -       n       n       -       -       local",
    "virtual   unix  -       n       n       -       -       virtual",
    "lmtp      unix  -       -       n       -       -       lmtp",
    "anvil     unix  -       -       n       -       1       anvil",
    "scache    unix  -       -       n       -       1       scache",
    "postlog   unix-dgram n  -       n       -       1       postlogd",
];

/// The key of a master.cf entry: its service name. A line given for a
/// service replaces the default one whatever its type, because two entries
/// of one name (`qmgr unix` and `qmgr fifo`) would both claim
/// `public/qmgr`.
fn master_key(entry: &str) -> String {
    entry.split_whitespace().next().unwrap_or("").to_string()
}

/// True when `stderr` of `postfix check` says nothing but what is expected
/// of a test instance: the notice that Postfix 3.11 and later print
/// whenever `compatibility_level` is below the newest level (the instances
/// keep 3.6, so that every supported Postfix runs them with the same
/// defaults), and postconf's "unused parameter" warning for rqmgr's own
/// parameters (`rqmgr_*`), which Postfix does not know. Anything else there
/// is a problem.
pub(super) fn only_expected_notices(stderr: &str) -> bool {
    const NOTICE: [&str; 3] = [
        "Postfix is using backwards-compatible default settings",
        "See https://www.postfix.org/COMPATIBILITY_README.html for details",
        "To disable backwards compatibility use ",
    ];
    stderr.lines().all(|line| {
        let text = line.trim();
        let text = text.strip_prefix("postfix: ").unwrap_or(text);
        let ours = text.contains(": warning: ")
            && text
                .split_once(": unused parameter: ")
                .is_some_and(|(_, p)| p.starts_with("rqmgr_"));
        text.is_empty() || ours || NOTICE.iter().any(|n| text.starts_with(n))
    })
}

impl Instance {
    pub(super) fn lay_out(
        &self,
        b: &InstanceBuilder,
        install: &crate::PostfixInstall,
    ) -> Result<()> {
        let root = &self.root;
        let mkdir =
            |p: &Path| std::fs::create_dir_all(p).map_err(|e| Error::io(format!("mkdir {p:?}"), e));
        for sub in ["etc", "spool", "data", "libexec", "mail"] {
            mkdir(&root.join(sub))?;
        }
        crate::chown_to_user(&root.join("data"), "postfix")?;
        crate::set_mode(&root.join("mail"), 0o1777)?;

        // Stock daemons, copied (not linked: Postfix warns about symlinks).
        let entries = std::fs::read_dir(&install.daemon_directory)
            .map_err(|e| Error::io(format!("reading {:?}", install.daemon_directory), e))?;
        for e in entries {
            let e = e.map_err(|e| Error::io("reading daemon_directory", e))?;
            if e.file_type().map(|t| t.is_file()).unwrap_or(false) {
                let to = root.join("libexec").join(e.file_name());
                std::fs::copy(e.path(), &to)
                    .map_err(|err| Error::io(format!("copy {:?}", e.path()), err))?;
            }
        }
        if let Some(bin) = self.queue_manager.binary() {
            let to = self.daemon_path(self.queue_manager.command());
            // Remove first: overwriting a copy in place would fail with
            // ETXTBSY if something ran it, and copy keeps the mode bits.
            let _ = std::fs::remove_file(&to);
            std::fs::copy(bin, &to).map_err(|e| Error::io(format!("copy {bin:?} to {to:?}"), e))?;
            crate::set_mode(&to, 0o755)?;
        }
        for f in ["postfix-files", "dynamicmaps.cf"] {
            let from = install.meta_directory.join(f);
            std::fs::copy(&from, root.join("etc").join(f)).map_err(|e| {
                Error::io(format!("copy {from:?} (is Postfix fully installed?)"), e)
            })?;
        }
        for d in ["postfix-files.d", "dynamicmaps.cf.d"] {
            let _ = std::fs::create_dir_all(root.join("etc").join(d));
        }

        std::fs::write(root.join("etc/main.cf"), self.main_cf_text(b))
            .map_err(|e| Error::io("writing main.cf", e))?;
        std::fs::write(root.join("etc/master.cf"), self.master_cf_text(b))
            .map_err(|e| Error::io("writing master.cf", e))?;
        Ok(())
    }

    fn main_cf_text(&self, b: &InstanceBuilder) -> String {
        let r = self.root.display();
        let aliases: Vec<String> = b
            .local_users
            .iter()
            .map(|u| format!("{{ {u} = {r}/mail/{u} }}"))
            .collect();
        let mut params: Vec<(String, String)> = vec![
            // 3.6 defaults, and no "backwards-compatible default" warnings.
            ("compatibility_level", "3.6".to_string()),
            ("config_directory", format!("{r}/etc")),
            ("meta_directory", format!("{r}/etc")),
            ("queue_directory", format!("{r}/spool")),
            ("data_directory", format!("{r}/data")),
            ("daemon_directory", format!("{r}/libexec")),
            ("maillog_file", format!("{r}/maillog")),
            ("maillog_file_prefixes", format!("{r}")),
            ("inet_interfaces", "loopback-only".to_string()),
            ("inet_protocols", "ipv4".to_string()),
            ("smtp_dns_support_level", "disabled".to_string()),
            ("mynetworks", "127.0.0.0/8".to_string()),
            (
                "smtpd_relay_restrictions",
                "permit_mynetworks, reject".to_string(),
            ),
            ("myhostname", b.myhostname.clone()),
            ("mydestination", "$myhostname, localhost".to_string()),
            ("alias_maps", format!("inline:{{ {} }}", aliases.join(", "))),
            ("alias_database", String::new()),
            ("local_recipient_maps", "$alias_maps".to_string()),
            ("biff", "no".to_string()),
            ("append_dot_mydomain", "no".to_string()),
            // rqmgr forgets what its scheduler learned when it restarts,
            // as the stock qmgr does, so that a queue manager's restart
            // means the same in every scenario; a test of the learned
            // state turns it on.
            ("rqmgr_learned_state", "no".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        match b.relay_port {
            Some(p) => params.push(("relayhost".into(), format!("[127.0.0.1]:{p}"))),
            None => params.push(("default_transport".into(), "discard".into())),
        }
        for (k, v) in &b.main_cf {
            params.retain(|(n, _)| n != k);
            params.push((k.clone(), v.clone()));
        }
        let mut text = String::from("# Written by rqmgr-harness for one test instance.\n");
        for (k, v) in params {
            text.push_str(&format!("{k} = {v}\n"));
        }
        text
    }

    fn master_cf_text(&self, b: &InstanceBuilder) -> String {
        let mut entries: Vec<String> = vec![
            format!(
                "{}      inet  n       -       n       -       -       smtpd",
                self.smtpd.port()
            ),
            format!(
                "qmgr      unix  n       -       n       300     1       {}",
                self.queue_manager.command()
            ),
        ];
        entries.extend(MASTER_CF.iter().map(|s| s.to_string()));
        entries.retain(|e| !b.without_services.contains(&master_key(e)));
        for extra in &b.master_cf {
            let key = master_key(extra);
            match entries.iter().position(|e| master_key(e) == key) {
                Some(i) => entries[i] = extra.clone(),
                None => entries.push(extra.clone()),
            }
        }
        let mut text = String::from("# Written by rqmgr-harness for one test instance.\n");
        for e in entries {
            text.push_str(e.trim_end());
            text.push('\n');
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::only_expected_notices;

    #[test]
    fn compatibility_notices_and_our_parameters_are_not_check_failures() {
        let notice = "postfix: Postfix is using backwards-compatible default settings\n\
            postfix: See https://www.postfix.org/COMPATIBILITY_README.html for details\n\
            postfix: To disable backwards compatibility use \"postconf compatibility_level=3.11\" \
            and \"postfix reload\"\n";
        assert!(only_expected_notices(notice));
        assert!(only_expected_notices(""));
        assert!(only_expected_notices(
            "/usr/sbin/postconf: warning: /t/etc/main.cf: unused parameter: rqmgr_x=1\n"
        ));
        assert!(!only_expected_notices(
            "/usr/sbin/postconf: warning: /t/etc/main.cf: unused parameter: foo=1\n"
        ));
        assert!(!only_expected_notices(
            "postfix/postfix-script: warning: not owned by postfix: /x\n"
        ));
        assert!(!only_expected_notices(&format!(
            "{notice}postfix: fatal: bad main.cf\n"
        )));
    }
}
