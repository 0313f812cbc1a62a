use super::*;

fn redactor() -> Redactor {
    Redactor::new(&RedactConfig::default()).unwrap()
}

fn r(line: &str) -> String {
    String::from_utf8(redactor().redact(line.as_bytes()).into_owned()).unwrap()
}

/// Each case: input, expected output.
fn check(cases: &[(&str, &str)]) {
    let red = redactor();
    for (input, expected) in cases {
        let got = String::from_utf8(red.redact(input.as_bytes()).into_owned()).unwrap();
        assert_eq!(&got, expected, "input: {input}");
        // The agent redacts and the collector redacts again: a second
        // pass must find nothing more.
        let again = red.redact(got.as_bytes());
        assert!(
            matches!(again, Cow::Borrowed(_)),
            "not idempotent: {got}\n again: {}",
            String::from_utf8_lossy(&again)
        );
    }
}

/// Lines that must come back untouched (and borrowed).
fn untouched(lines: &[&str]) {
    let red = redactor();
    for line in lines {
        let got = red.redact(line.as_bytes());
        assert!(
            matches!(got, Cow::Borrowed(_)),
            "must not be redacted: {line}\n got: {}",
            String::from_utf8_lossy(&got)
        );
    }
}

#[test]
fn query_string_and_form_params() {
    check(&[
        (
            r#"1.2.3.4 - - [10/Oct/2024:13:55:36 +0000] "GET /login?user=bob&password=hunter2&next=/ HTTP/1.1" 200 12 "-" "curl/8""#,
            r#"1.2.3.4 - - [10/Oct/2024:13:55:36 +0000] "GET /login?user=bob&password=[REDACTED:password]&next=/ HTTP/1.1" 200 12 "-" "curl/8""#,
        ),
        ("GET /a?PassWord=x1;sid=abc123 HTTP/1.1", "GET /a?PassWord=[REDACTED:password];sid=[REDACTED:session] HTTP/1.1"),
        ("/cb#access_token=ya29.a0Af&token_type=bearer", "/cb#access_token=[REDACTED:token]&token_type=bearer"),
        ("/x?api_key=abc&apikey=def&key=ghi&sort_key=name", "/x?api_key=[REDACTED:api_key]&apikey=[REDACTED:api_key]&key=[REDACTED:api_key]&sort_key=name"),
        ("/x?refresh_token=r1&id_token=i1&client_secret=cs", "/x?refresh_token=[REDACTED:token]&id_token=[REDACTED:token]&client_secret=[REDACTED:secret]"),
        // `?` may appear raw inside a query value, so it does not end one:
        // a path parameter takes the next one with it (too much, never too little).
        ("/x;jsessionid=0123ABCD?PHPSESSID=zz&pwd=p&passwd=q&pass=w", "/x;jsessionid=[REDACTED:session]&pwd=[REDACTED:password]&passwd=[REDACTED:password]&pass=[REDACTED:password]"),
        ("/x?PHPSESSID=zz&a=1", "/x?PHPSESSID=[REDACTED:session]&a=1"),
        ("/s3/o?X-Amz-Signature=abcdef&sig=123&auth=u1&credentials=c", "/s3/o?X-Amz-Signature=[REDACTED:signature]&sig=[REDACTED:signature]&auth=[REDACTED:auth]&credentials=[REDACTED:secret]"),
        // Rails-style and percent-encoded names.
        ("user%5Bpassword%5D=s3cr3t&user[email]=a", "user%5Bpassword%5D=[REDACTED:password]&user[email]=a"),
        ("user[password]=s3cr3t&x=1", "user[password]=[REDACTED:password]&x=1"),
        ("pass%77ord=s3cr3t&x=1", "pass%77ord=[REDACTED:password]&x=1"),
        // Short names, spelled-out names, other languages.
        (
            "/l?pw=hunter2&db_pw=a1&admin-PW=b2&pass_word=c3&passcode=1234&pswd=d4&upward=ok",
            "/l?pw=[REDACTED:password]&db_pw=[REDACTED:password]&admin-PW=[REDACTED:password]&pass_word=[REDACTED:password]&passcode=[REDACTED:password]&pswd=[REDACTED:password]&upward=ok",
        ),
        (
            "/l?passwort=e5&Kennwort=f6&contrasena=g7&senha=h8&mot_de_passe=i9&wachtwoord=j0&pword=k1&resenha_id=77",
            "/l?passwort=[REDACTED:password]&Kennwort=[REDACTED:password]&contrasena=[REDACTED:password]&senha=[REDACTED:password]&mot_de_passe=[REDACTED:password]&wachtwoord=[REDACTED:password]&pword=[REDACTED:password]&resenha_id=77",
        ),
        (r#"{"user":"bob","pw":"hunter2"} user[pw]=x1 pw: y2"#, r#"{"user":"bob","pw":"[REDACTED:password]"} user[pw]=[REDACTED:password] pw: [REDACTED:password]"#),
        ("/sso?next=%2Flogin%3Fpw%3Dhunter2%26x%3D1", "/sso?next=%2Flogin%3Fpw%3D[REDACTED:password]%26x%3D1"),
        // A query string encoded inside a redirect parameter.
        ("/sso?next=%2Flogin%3Fuser%3Dbob%26password%3Dhunter2%26x%3D1 HTTP/1.1", "/sso?next=%2Flogin%3Fuser%3Dbob%26password%3D[REDACTED:password]%26x%3D1 HTTP/1.1"),
        // logfmt, quoted values.
        (r#"level=info user=bob password="hunter 2" ok=true"#, r#"level=info user=bob password="[REDACTED:password]" ok=true"#),
        (r#"msg="login" session_id=8f14e45f"#, r#"msg="login" session_id=[REDACTED:session]"#),
        // Apache logs a quote the client sent as `\"`: the value goes on.
        (
            r#"1.2.3.4 - - [07/Dec/2026:14:19:53 +0000] "GET /login?password=Ab\"QuoteTail01 HTTP/1.1" 200 1 "-" "x""#,
            r#"1.2.3.4 - - [07/Dec/2026:14:19:53 +0000] "GET /login?password=[REDACTED:password] HTTP/1.1" 200 1 "-" "x""#,
        ),
        // Inside a JSON string, `\"` closes the value.
        (
            r#"{"url":"/x?password=abc\",\"next\":1"}"#,
            r#"{"url":"/x?password=[REDACTED:password]\",\"next\":1"}"#,
        ),
    ]);
}

#[test]
fn json_fields() {
    check(&[
        (
            r#"{"user":"bob","password":"hunter2","ok":true}"#,
            r#"{"user":"bob","password":"[REDACTED:password]","ok":true}"#,
        ),
        (
            r#"{"password" : "hun\"ter\\" , "n":1}"#,
            r#"{"password" : "[REDACTED:password]" , "n":1}"#,
        ),
        (
            r#"{"accessToken":"abc.def","pin":1234}"#,
            r#"{"accessToken":"[REDACTED:token]","pin":1234}"#,
        ),
        (
            r#"{"api_key": 123456, "secret": null}"#,
            r#"{"api_key": [REDACTED:api_key], "secret": null}"#,
        ),
        // A JSON body escaped inside a JSON log line (nginx escape=json).
        (
            r#"{"request_body":"{\"user\":\"bob\",\"password\":\"hu\\\"n\"}","status":200}"#,
            r#"{"request_body":"{\"user\":\"bob\",\"password\":\"[REDACTED:password]\"}","status":200}"#,
        ),
        // Python repr.
        (
            "{'password': 'hunter2', 'user': 'bob'}",
            "{'password': '[REDACTED:password]', 'user': 'bob'}",
        ),
    ]);
}

#[test]
fn ruby_xml_and_command_lines() {
    check(&[
        (
            r#"Parameters: {"user"=>{"email"=>"a@b.c", "password"=>"hunter2"}, "commit"=>"Log in"}"#,
            r#"Parameters: {"user"=>{"email"=>"a@b.c", "password"=>"[REDACTED:password]"}, "commit"=>"Log in"}"#,
        ),
        (
            "<login><user>bob</user><password>hu nter2</password></login>",
            "<login><user>bob</user><password>[REDACTED:password]</password></login>",
        ),
        (
            "exec mysqldump --user=root --password s3cr3t db",
            "exec mysqldump --user=root --password [REDACTED:password] db",
        ),
        (
            r#"exec app --api-key=abc123 --token "x y""#,
            r#"exec app --api-key=[REDACTED:api_key] --token "[REDACTED:token]""#,
        ),
    ]);
    untouched(&[
        "<password/> and </password> alone",
        "--password-file /etc/pw",
    ]);
}

#[test]
fn headers_in_lines() {
    check(&[
        (
            "headers: Authorization: Bearer abcDEF123456ghi",
            "headers: Authorization: Bearer [REDACTED:auth]",
        ),
        (
            r#"req "Authorization: Basic dXNlcjpwYXNz" done"#,
            r#"req "Authorization: Basic [REDACTED:auth]" done"#,
        ),
        (
            r#""Cookie: _ga=GA1.2.3; sid=abc; theme=dark" 200"#,
            r#""Cookie: [REDACTED:cookie]" 200"#,
        ),
        (
            "X-Api-Key: 0123456789abcdef rest",
            "X-Api-Key: [REDACTED:api_key] rest",
        ),
        (
            "x-auth-token: tok123, next",
            "x-auth-token: [REDACTED:token], next",
        ),
        (
            "error: password: hunter2",
            "error: password: [REDACTED:password]",
        ),
    ]);
}

#[test]
fn bearer_and_basic_anywhere() {
    check(&[
        (
            "token sent as bearer 9f8e7d6c5b4a3210 by client",
            "token sent as bearer [REDACTED:bearer] by client",
        ),
        (
            "h=Bearer%20AbCdEf0123456789 x",
            "h=Bearer%20[REDACTED:bearer] x",
        ),
        (
            "basic dXNlcjpwYXNzd29yZA== used",
            "basic [REDACTED:basic] used",
        ),
    ]);
    untouched(&[
        "missing bearer credentials",
        "use basic settings here",
        "Basic realm=\"api\"",
        "the bearer of bad news",
        "basic dGhpcyBpcyBub3Q= no colon inside",
    ]);
}

#[test]
fn url_userinfo() {
    check(&[
        (
            "connecting to https://admin:s3cr3t@db.example.com:5432/x",
            "connecting to https://admin:[REDACTED:url_password]@db.example.com:5432/x",
        ),
        (
            "redis://:p%40ss@cache:6379",
            "redis://:[REDACTED:url_password]@cache:6379",
        ),
    ]);
    untouched(&[
        "GET https://example.com:8443/path?a=b@c HTTP/1.1",
        "mailto ftp://anonymous@ftp.example.com/pub",
        "http://host/users/@me",
    ]);
}

#[test]
fn url_userinfo_escaped_and_encoded() {
    check(&[
        (
            r#"{"dsn":"postgres:\/\/app:s3cr3t@db:5432\/x"}"#,
            r#"{"dsn":"postgres:\/\/app:[REDACTED:url_password]@db:5432\/x"}"#,
        ),
        (
            "GET /sso?next=https%3A%2F%2Fbob%3Ahunter2%40intranet%2Fhome&x=1 HTTP/1.1",
            "GET /sso?next=https%3A%2F%2Fbob%3A[REDACTED:url_password]%40intranet%2Fhome&x=1 HTTP/1.1",
        ),
        (
            "u=ftp%3a%2f%2fanon%3ap%25w%40ftp.example.com",
            "u=ftp%3a%2f%2fanon%3a[REDACTED:url_password]%40ftp.example.com",
        ),
        (
            r#"env DATABASE_URL=mysql://root:pw@10.0.0.5/app ./run"#,
            r#"env DATABASE_URL=mysql://root:[REDACTED:url_password]@10.0.0.5/app ./run"#,
        ),
    ]);
    untouched(&[
        "GET /oauth/authorize?redirect_uri=https%3A%2F%2Fexample.com%2Fcb HTTP/1.1",
        "GET /r?u=https%3A%2F%2Fexample.com%3A8443%2Fa%40b HTTP/1.1",
        r#"{"url":"https:\/\/example.com\/a@b"}"#,
    ]);
}

#[test]
fn nightowl_tokens_keep_their_id() {
    let secret = "0123456789abcdef".repeat(4);
    let line = format!("GET /api/v1/search?q=nwl_0a1b2c3d4e5f_{secret} wrongly pasted");
    check(&[(
        &line[..],
        "GET /api/v1/search?q=nwl_0a1b2c3d4e5f_[REDACTED:nightowl_token] wrongly pasted",
    )]);
    untouched(&[
        "nwl_000000000000_bogus",
        "nwl_0a1b2c3d4e5f_0123 too short",
        "xnwl_0a1b2c3d4e5f_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ]);
}

#[test]
fn command_line_credentials() {
    check(&[
        (
            "cron[812]: (root) CMD (curl -sf -u admin:s3cr3t https://backup.local/run)",
            "cron[812]: (root) CMD (curl -sf -u admin:[REDACTED:password] https://backup.local/run)",
        ),
        (
            "curl -uadmin:s3cr3t http://x",
            "curl -uadmin:[REDACTED:password] http://x",
        ),
        (
            r#"curl --user "deploy:pa ss" -H "Authorization: Bearer abcDEF123456ghi" http://x"#,
            r#"curl --user "deploy:[REDACTED:password]" -H "Authorization: Bearer [REDACTED:auth]" http://x"#,
        ),
        (
            "/usr/bin/curl --user=ci:tok3n --proxy-user proxy:pr0xy -sSu me:mine http://x",
            "/usr/bin/curl --user=ci:[REDACTED:password] --proxy-user proxy:[REDACTED:password] -sSu me:[REDACTED:password] http://x",
        ),
        (
            "mysql -h db1 -u root -pS3cret! appdb",
            "mysql -h db1 -u root -p[REDACTED:password] appdb",
        ),
        (
            "mysqldump -uroot -p'my pass' --all-databases | gzip",
            "mysqldump -uroot -p'[REDACTED:password]' --all-databases | gzip",
        ),
        (
            "mariadb-dump --user=root --password=hunter2 db",
            "mariadb-dump --user=root --password=[REDACTED:password] db",
        ),
        (
            "sshpass -p 'hunter 2' ssh -p 2222 deploy@web1",
            "sshpass -p '[REDACTED:password]' ssh -p 2222 deploy@web1",
        ),
        (
            "sshpass -phunter2 scp a b",
            "sshpass -p[REDACTED:password] scp a b",
        ),
        (
            "SSHPASS=hunter2 sshpass -e ssh host",
            "SSHPASS=[REDACTED:password] sshpass -e ssh host",
        ),
        (
            "PGPASSWORD=s3cr3t psql -h db -U app",
            "PGPASSWORD=[REDACTED:password] psql -h db -U app",
        ),
        (
            "env MYSQL_PWD=s3cr3t mysql -u root",
            "env MYSQL_PWD=[REDACTED:password] mysql -u root",
        ),
        (
            "backup.sh --password=hunter2 --password hunter3 --pass hunter4",
            "backup.sh --password=[REDACTED:password] --password [REDACTED:password] --pass [REDACTED:password]",
        ),
        (
            "openssl pkcs12 -in a.p12 -passin pass:hunter2 -out a.pem",
            "openssl pkcs12 -in a.p12 -passin [REDACTED:password] -out a.pem",
        ),
        // auditd EXECVE records and JSON argv arrays.
        (
            r#"type=EXECVE msg=audit(1700000000.1:42): argc=4 a0="sshpass" a1="-p" a2="hunter2" a3="ssh""#,
            r#"type=EXECVE msg=audit(1700000000.1:42): argc=4 a0="sshpass" a1="-p" a2="[REDACTED:password]" a3="ssh""#,
        ),
        (
            r#"{"argv":["curl","-u","admin:s3cr3t","https://x"]}"#,
            r#"{"argv":["curl","-u","admin:[REDACTED:password]","https://x"]}"#,
        ),
        (
            "ran: curl -u a:b; mysql -pX db",
            "ran: curl -u a:[REDACTED:password]; mysql -p[REDACTED:password] db",
        ),
    ]);
    untouched(&[
        // The user agent, paths and prompts are not credentials.
        r#"10.0.0.1 - - [10/Oct/2024:13:55:36 +0000] "GET /docs/mysql-pdo?x=1 HTTP/1.1" 200 512 "-" "curl/8.4.0""#,
        r#"10.0.0.1 - - [10/Oct/2024:13:55:36 +0000] "GET /mysql HTTP/1.1" 404 0 "-" "sshpass-probe""#,
        "mysql -u root -p appdb",
        "mysql -h db -P 3306 -u app -p",
        "curl -u admin https://x",
        "curl -sS -o out.json https://x/?user=1",
        "mkdir -p /var/lib/mysql",
        "sudo -u postgres psql",
        "sshpass -f /etc/pw ssh -p 2222 host",
        "the curl command and mysql -p prompt",
    ]);
}

#[test]
fn jwts_and_provider_keys() {
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
    check(&[
        (&format!("jwt={jwt}&a=b")[..], "jwt=[REDACTED:jwt]&a=b"),
        (
            &format!("x-token {jwt} end")[..],
            "x-token [REDACTED:jwt] end",
        ),
        (
            "aws key AKIAIOSFODNN7EXAMPLE used",
            "aws key [REDACTED:aws_key] used",
        ),
        (
            "gh ghp_aBcDeF0123456789aBcDeF0123456789abcd ok",
            "gh [REDACTED:github_token] ok",
        ),
        (
            "pat github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuv",
            "pat [REDACTED:github_token]",
        ),
        (
            "slack xoxb-123456789012-abcdefABCDEF ok",
            "slack [REDACTED:slack_token] ok",
        ),
        (
            "stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc.",
            "stripe [REDACTED:stripe_key].",
        ),
        (
            "maps AIzaSyA-1234567890abcdefghijklmnopqrstu ok",
            "maps [REDACTED:google_api_key] ok",
        ),
        (
            r#"{"key_pem":"-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----"}"#,
            r#"{"key_pem":"-----BEGIN RSA PRIVATE KEY-----[REDACTED:private_key]-----END RSA PRIVATE KEY-----"}"#,
        ),
    ]);
    untouched(&[
        "region asia-east1 and AKIA short",
        "AKIAIOSFODNN7EXAMPLEXX is too long",
        "eyJhbGciOiJIUzI1NiJ9 alone is a header only",
        "-----BEGIN CERTIFICATE----- MIIB -----END CERTIFICATE-----",
        "skip sk_live_ short",
    ]);
}

#[test]
fn card_numbers_pass_luhn_and_a_network() {
    check(&[
        (
            "/pay?card=4111111111111111&x=1",
            "/pay?card=[REDACTED:card]&x=1",
        ),
        ("card 4111 1111 1111 1111 ok", "card [REDACTED:card] ok"),
        ("amex 3782-822463-10005.", "amex [REDACTED:card]."),
        (
            "mc 5555555555554444 and 2223003122003222",
            "mc [REDACTED:card] and [REDACTED:card]",
        ),
        (
            "status 200 4111111111111111 rest",
            "status 200 [REDACTED:card] rest",
        ),
        // Whole line, 13 digits; and at both ends of a line.
        ("4222222222222", "[REDACTED:card]"),
        (
            "4111111111111111 x 5555 5555 5555 4444",
            "[REDACTED:card] x [REDACTED:card]",
        ),
        // A card's security code, by name (PCI: never stored).
        (
            "/pay?card=4111111111111111&cvv=123&exp=12/29",
            "/pay?card=[REDACTED:card]&cvv=[REDACTED:card]&exp=12/29",
        ),
        (
            r#"{"cvc":"4321","name":"x"}"#,
            r#"{"cvc":"[REDACTED:card]","name":"x"}"#,
        ),
        // Typed with spaces into a GET form: `+` or `%20` in the query.
        (
            "GET /pay?cc=5555+5555+5555+4444 HTTP/1.1",
            "GET /pay?cc=[REDACTED:card] HTTP/1.1",
        ),
        (
            "GET /pay?cc=4111%201111%201111%201111&x=1",
            "GET /pay?cc=[REDACTED:card]&x=1",
        ),
        ("cc=3782%20822463%2010005", "cc=[REDACTED:card]"),
        ("cc=6011+0009+9013+9424", "cc=[REDACTED:card]"),
    ]);
    untouched(&[
        // Separators of two kinds are not one number.
        "n=4111+1111-1111+1111",
        "q=a%2041%2011",
        // Luhn fails.
        "order 4111111111111112 shipped",
        // Epoch milliseconds, microseconds, nanoseconds.
        "ts=1700000000000 us=1700000000000000 ns=1700000000123456789",
        // Timestamps, IPs, byte counts, decimals, UUIDs, hex.
        r#"10.0.0.1 - - [10/Oct/2024:13:55:36 +0000] "GET / HTTP/1.1" 200 4111111 "-" "-""#,
        "20241010135536 2024-10-10 13:55:36.123456",
        "duration=0.4111111111111111 x",
        "id 550e8400-e29b-41d4-a716-446655440000",
        "sha deadbeef4111111111111111cafe",
        "phone +1 555 123 4567",
        "v=4111111111111111.5",
    ]);
}

#[test]
fn near_misses_stay_untouched() {
    untouched(&[
        r#"66.249.66.1 - - [10/Oct/2024:13:55:36 +0000] "GET /passport/apply?step=2 HTTP/1.1" 200 512 "https://example.com/session/new" "Mozilla/5.0""#,
        "GET /oauth/authorize?client_id=abc&response_type=code HTTP/1.1",
        "GET /keyboard?tokens=5&max_tokens=100&tokenizer=bpe HTTP/1.1",
        r#"{"type":"password","field":"token","keys":["a","b"]}"#,
        r#"{"session": {"id": 5}}"#,
        "compass direction passenger",
        "/api/keys/list?sid= HTTP/1.1",
        "already password=[REDACTED:password] done",
    ]);
}

#[test]
fn many_secrets_in_one_line_keep_the_rest() {
    let got = r("u=a&password=p1&token=t1 AKIAIOSFODNN7EXAMPLE card=4111111111111111");
    assert_eq!(
        got,
        "u=a&password=[REDACTED:password]&token=[REDACTED:token] [REDACTED:aws_key] card=[REDACTED:card]"
    );
}

#[test]
fn batch_without_secrets_is_the_same_bytes() {
    let red = redactor();
    let lines = Bytes::from_static(b"GET /a HTTP/1.1\nGET /b?q=1 HTTP/1.1\n");
    assert!(red.redact_batch(&lines).is_none());
}

#[test]
fn batch_is_rebuilt_once_with_line_deltas_and_counts() {
    let red = redactor();
    let lines = Bytes::from_static(b"a\n/x?password=p\nb\n/y?token=abcdef&key=k\nc\n");
    let out = red.redact_batch(&lines).expect("redacted");
    assert_eq!(
        &out.lines[..],
        &b"a\n/x?password=[REDACTED:password]\nb\n/y?token=[REDACTED:token]&key=[REDACTED:api_key]\nc\n"[..]
    );
    assert_eq!(out.lines.iter().filter(|&&b| b == b'\n').count(), 5);
    let deltas: i64 = out.changed.iter().map(|(_, d)| d).sum();
    assert_eq!(deltas, lines.len() as i64 - out.lines.len() as i64);
    assert_eq!(
        out.changed.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        vec![1, 3]
    );
    let mut counts: Vec<(&str, u64)> = out
        .counts
        .iter()
        .map(|(k, n)| (red.kind_name(*k), *n))
        .collect();
    counts.sort();
    assert_eq!(counts, vec![("api_key", 1), ("password", 1), ("token", 1)]);
}

#[test]
fn private_key_over_several_lines_of_a_batch() {
    let red = redactor();
    let lines = Bytes::from_static(
        b"key follows\n-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----\nafter\n",
    );
    let out = red.redact_batch(&lines).expect("redacted");
    let text = String::from_utf8(out.lines.to_vec()).unwrap();
    assert!(
        !text.contains("MIIEvQ") && !text.contains("BKcwgg"),
        "{text}"
    );
    assert!(
        text.ends_with("-----END PRIVATE KEY-----\nafter\n"),
        "{text}"
    );
}

#[test]
fn configured_names_and_patterns() {
    let config = RedactConfig {
        names: vec!["PIN".into()],
        patterns: vec![
            PatternConfig {
                name: "ssn".into(),
                regex: r"\b\d{3}-\d{2}-\d{4}\b".into(),
            },
            PatternConfig {
                name: "employee".into(),
                regex: r"emp=(E\d{6})".into(),
            },
        ],
        marker: "<{kind}>".into(),
        ..RedactConfig::default()
    };
    let red = Redactor::new(&config).unwrap();
    let got = red.redact(b"pin=1234 ssn 123-45-6789 emp=E123456 password=x");
    assert_eq!(
        String::from_utf8(got.into_owned()).unwrap(),
        "pin=<pin> ssn <ssn> emp=<employee> password=<password>"
    );
}

#[test]
fn bad_config_names_the_key() {
    let config = RedactConfig {
        patterns: vec![
            PatternConfig {
                name: "ok".into(),
                regex: "a+".into(),
            },
            PatternConfig {
                name: "broken".into(),
                regex: "(unclosed".into(),
            },
        ],
        ..RedactConfig::default()
    };
    let err = format!("{:#}", Redactor::new(&config).err().expect("must fail"));
    assert!(err.contains("redact.patterns[1].regex"), "{err}");
    let empty = RedactConfig {
        patterns: vec![PatternConfig {
            name: "any".into(),
            regex: "x*".into(),
        }],
        ..RedactConfig::default()
    };
    let err = format!("{:#}", Redactor::new(&empty).err().expect("must fail"));
    assert!(err.contains("empty string"), "{err}");
}

#[test]
fn luhn_reference_values() {
    assert!(card::luhn(b"79927398713"));
    assert!(!card::luhn(b"79927398710"));
    assert!(card::is_card(b"6011111111111117"));
    assert!(!card::is_card(b"1234567812345670")); // passes Luhn, no network
}

/// Random lines built from the pieces the detectors look at: no panic, no
/// line break added, and the batch keeps its line count.
#[test]
fn random_lines_never_panic() {
    const PIECES: &[&str] = &[
        "password",
        "Token",
        "KEY",
        "sess",
        "=",
        ":",
        "\"",
        "'",
        "\\",
        "\\\"",
        "&",
        ";",
        "%3D",
        "%253D",
        "%26",
        "%5B",
        "%",
        " ",
        "Bearer ",
        "basic ",
        "://",
        "@",
        "eyJhbGciOiJIUzI1",
        ".",
        "AKIA",
        "ghp_",
        "-----BEGIN PRIVATE KEY-----",
        "-----END",
        "4111",
        "1111",
        "-",
        "{",
        "}",
        "[",
        "]",
        "x",
        "9",
        "ä",
        "\r",
        "curl ",
        "mysql",
        "sshpass",
        " -u ",
        " -p",
        "a1=",
        "%3A%2F%2F",
        "%3A",
        "%40",
        ":\\/\\/",
        "[REDACTED:password]",
    ];
    let red = redactor();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut batch = Vec::new();
    for _ in 0..20_000 {
        let mut line = String::new();
        for _ in 0..(next() % 24) {
            line.push_str(PIECES[(next() % PIECES.len() as u64) as usize]);
        }
        let out = red.redact(line.as_bytes());
        assert!(!out.contains(&b'\n'), "{line}");
        let again = red.redact(&out);
        assert_eq!(
            String::from_utf8_lossy(&again),
            String::from_utf8_lossy(&out),
            "a second pass changed {line:?}"
        );
        batch.extend_from_slice(line.as_bytes());
        batch.push(b'\n');
    }
    let batch = Bytes::from(batch);
    if let Some(out) = red.redact_batch(&batch) {
        let count = |b: &[u8]| b.iter().filter(|&&c| c == b'\n').count();
        assert_eq!(count(&out.lines), count(&batch));
        let deltas: i64 = out.changed.iter().map(|(_, d)| d).sum();
        assert_eq!(deltas, batch.len() as i64 - out.lines.len() as i64);
    }
}

/// Lines built to make a detector rescan the rest of the line per hit
/// finish, and still redact what follows them.
#[test]
fn pathological_lines_stay_linear_and_still_redact() {
    let red = redactor();
    for piece in [
        "pass",
        "basic+",
        "eyJ",
        "github_pat_",
        "password=[REDACTED]",
        "Cookie: [REDACTED]",
        "bearer ",
        "4111 ",
        "://a",
        "\"password\":",
        "%5B",
        "curl -u ",
        "curl ",
        "mysql -p",
        "sshpass -p ",
        "https%3A%2F%2Fa%3A",
    ] {
        let mut line = piece.repeat(200_000 / piece.len());
        line.push_str(" then password=hunter2");
        let out = red.redact(line.as_bytes());
        let tail = &out[out.len().saturating_sub(40)..];
        assert!(
            !String::from_utf8_lossy(tail).contains("hunter2"),
            "{piece}: {}",
            String::from_utf8_lossy(tail)
        );
    }
}

/// The agent redacts before its spool and the collector redacts again:
/// over lines made of realistic fields (secrets of every kind, access log
/// pieces, command lines) with random values and separators, the second
/// pass changes nothing.
#[test]
fn a_second_pass_changes_nothing() {
    let red = redactor();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!";
    const SEPARATORS: &[&str] = &[" ", "&", "; ", "\t", ", ", "\" \"", "?", " | "];
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
    for _ in 0..20_000 {
        let mut line = String::new();
        for k in 0..(1 + next() % 8) {
            if k > 0 {
                line.push_str(SEPARATORS[(next() % SEPARATORS.len() as u64) as usize]);
            }
            let v: String = (0..(1 + next() % 14))
                .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize] as char)
                .collect();
            let field = match next() % 24 {
                0 => format!("password={v}"),
                1 => format!("access_token={v}"),
                2 => format!("\"password\":\"{v}\""),
                3 => format!("Authorization: Bearer {v}9x"),
                4 => "Basic dXNlcjpwYXNzd29yZA==".to_string(),
                5 => format!("https://bob:{v}@db.example.com:5432/x"),
                6 => format!("curl -sf -u admin:{v} https://x/run"),
                7 => format!("mysql -h db -u root -p{v} app"),
                8 => format!("sshpass -p {v} ssh -p 2222 host"),
                9 => format!("PGPASSWORD={v} psql"),
                10 => "card 4111111111111111".to_string(),
                11 => "AKIAIOSFODNN7EXAMPLE".to_string(),
                12 => format!("jwt={jwt}"),
                13 => format!("-----BEGIN PRIVATE KEY-----{v}-----END PRIVATE KEY-----"),
                14 => format!("next=https%3A%2F%2Fu%3A{v}%40h%2F"),
                15 => format!("Cookie: sid={v}; theme=dark"),
                16 => format!("--password {v}"),
                17 => format!("{{\"argv\":[\"curl\",\"-u\",\"a:{v}\"]}}"),
                18 => "\"GET /index.html HTTP/1.1\" 200 512".to_string(),
                19 => "[10/Oct/2024:13:55:36 +0000]".to_string(),
                20 => "\"Mozilla/5.0 (X11; Linux x86_64) curl/8.4.0\"".to_string(),
                21 => format!("/search?q={v}&page=2"),
                22 => format!("user={v}"),
                _ => format!("X-Api-Key: {v}"),
            };
            line.push_str(&field);
        }
        let once = red.redact(line.as_bytes()).into_owned();
        let twice = red.redact(&once);
        assert!(
            matches!(twice, Cow::Borrowed(_)),
            "a second pass changed {line:?}\n once:  {}\n twice: {}",
            String::from_utf8_lossy(&once),
            String::from_utf8_lossy(&twice)
        );
    }
}

#[test]
fn markers_are_counted_by_kind() {
    let red = redactor();
    let mut kinds = Vec::new();
    red.count_markers(
        b"a=[REDACTED:password] [REDACTED:nope] [REDACTED:card][REDACTED:token] [REDACTED:",
        |k| kinds.push(red.kind_name(k).to_string()),
    );
    assert_eq!(kinds, ["password", "card", "token"]);
    let custom = Redactor::new(&RedactConfig {
        marker: "<{kind}>".into(),
        names: vec!["pin".into()],
        ..RedactConfig::default()
    })
    .unwrap();
    let mut kinds = Vec::new();
    custom.count_markers(b"pin=<pin> x=<password>", |k| {
        kinds.push(custom.kind_name(k).to_string())
    });
    assert_eq!(kinds, ["pin", "password"]);
}

/// The packed searcher must report what the automaton reports: the same
/// leftmost-longest trigger at every position, over lines mixing every
/// trigger literal (and its case variants, prefixes and overlaps such as
/// `sshpass`/`pass`, `xoxb-`, `%3A%2F%2F`) with ordinary text.
#[test]
fn packed_and_automaton_triggers_agree() {
    let mut literals = Vec::new();
    for &(literal, trigger) in TRIGGERS {
        literals.extend(case_variants(literal, trigger));
    }
    // Configured names may extend a built-in one: the longest must win.
    literals.extend(case_variants("passphrase", Trigger::Name));
    literals.extend(case_variants("sessid", Trigger::Name));
    // Teddy takes at most 128 literals: past that, every line would walk
    // the automaton byte by byte again.
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("ssse3") {
        assert!(literals.len() <= 128 && Triggers::packed(&literals).is_some());
    }
    let Some(packed) = Triggers::packed(&literals) else {
        return; // no SIMD here: the automaton is what runs
    };
    let automaton = Triggers::automaton(&literals).expect("automaton");
    let mut pieces: Vec<String> = literals.clone();
    for l in &literals {
        pieces.push(l[..l.len() - 1].to_string());
        pieces.push(l[1..].to_string());
    }
    pieces.extend(
        [
            " ",
            "/",
            "=",
            "a",
            "GET /index.html?q=1 HTTP/1.1",
            "Mozilla/5.0 (X11)",
            "\"",
            "9",
        ]
        .map(String::from),
    );
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let mut compared = 0;
    for _ in 0..20_000 {
        let mut line = String::new();
        for _ in 0..next(12) {
            line.push_str(&pieces[next(pieces.len())]);
        }
        let line = line.as_bytes();
        let mut from = 0;
        loop {
            let (p, a) = (packed.find(line, from), automaton.find(line, from));
            assert_eq!(
                p.map(|m| (m.start(), m.end(), m.pattern())),
                a.map(|m| (m.start(), m.end(), m.pattern())),
                "line {:?} from {from}",
                String::from_utf8_lossy(line)
            );
            compared += 1;
            match a {
                Some(m) => from = m.start() + 1,
                None => break,
            }
        }
    }
    assert!(compared > 40_000, "{compared} searches compared");
}
