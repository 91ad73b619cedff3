"""Token scopes (flyctl internal/command/tokens/create.go; refusals are the API's, printed by
flyctl as `Error: <text>`, exit 1; every macaroon refusal starts with "unauthorized")."""

from fakefly import state


def test_a_deploy_token_manages_its_own_app_only(fly):
    fly.run("apps", "create", "web")
    fly.run("apps", "create", "worker")
    r = fly.run("tokens", "create", "deploy", "-a", "web", "-x", "2h")
    assert r.rc == 0 and r.out.startswith("FlyV1 fm2_")
    deploy = {"FLY_API_TOKEN": r.out.strip()}
    assert fly.run("secrets", "import", "-a", "web", "--stage", input="K=v\n", env=deploy).rc == 0
    assert fly.run("status", "-a", "web", "--json", env=deploy).rc == 0
    for argv in (("apps", "create", "new-app", "--org", "personal"),     # creating an app
                 ("apps", "list", "--org", "personal", "--json"),        # the org's apps
                 ("status", "-a", "worker", "--json"),                   # another app
                 ("secrets", "import", "-a", "worker", "--stage"),
                 ("tokens", "create", "org")):                           # minting
        r = fly.run(*argv, input="K=v\n", env=deploy)
        assert (r.rc, r.err) == (1, "Error: unauthorized\n"), argv
    assert "new-app" not in state.load(fly.home)["apps"]
    assert "K" not in state.load(fly.home)["apps"]["worker"]["secrets"]


def test_an_org_token_creates_apps_in_its_org_only(fly):
    org = {"FLY_API_TOKEN": fly.run("tokens", "create", "org", "-o", "personal").out.strip()}
    assert fly.run("apps", "create", "lock-app", "--org", "personal", env=org).rc == 0
    assert fly.run("apps", "list", "--org", "personal", "--json", env=org).rc == 0
    state.seed_app(fly.home, "theirs", org="other")
    r = fly.run("status", "-a", "theirs", "--json", env=org)
    assert (r.rc, r.err) == (1, "Error: unauthorized\n")


def test_an_expired_token_is_refused_and_an_unknown_one_is_personal(fly):
    from fakefly.tokens import make_token

    fly.run("apps", "create", "web")
    old = make_token(fly.home, "org", expires_in=-1)
    assert fly.run("status", "-a", "web", "--json", env={"FLY_API_TOKEN": old}).err == "Error: unauthorized\n"
    assert fly.run("status", "-a", "web", "--json", env={"FLY_API_TOKEN": "personal-oauth"}).rc == 0
    # FLY_ACCESS_TOKEN wins over FLY_API_TOKEN (reference §0.1)
    r = fly.run("status", "-a", "web", "--json", env={"FLY_API_TOKEN": "personal", "FLY_ACCESS_TOKEN": old})
    assert r.rc == 1
