"""Config validation: each bad value gives one message with its path."""

from __future__ import annotations

import pytest

from components import config
from components.errors import ConfigError

BASE = {"service": "hello", "image": "acme/hello", "servers": {"web": {"hosts": ["10.0.0.1"]}}}


def load(**over):
    return config.load({**BASE, **over}, stack="staging")


def test_defaults_follow_kamal_and_the_stack():
    cfg = load()
    assert cfg.destination == "staging"  # the stack's name
    assert cfg.ssh.user == "root" and cfg.ssh.port == 22 and cfg.ssh.host_key_policy == "strict"
    assert cfg.builder.context == "." and cfg.builder.dockerfile == "Dockerfile"
    assert cfg.servers["web"].restart == "unless-stopped"
    assert cfg.build_host() == "10.0.0.1"


def test_a_bare_host_list_is_the_web_role():
    assert load(servers=["a.example.com", "b.example.com"]).servers["web"].hosts == ("a.example.com", "b.example.com")


def test_role_env_overrides_the_shared_env():
    cfg = load(env={"clear": {"A": "1", "B": "1"}},
               servers={"web": {"hosts": ["h"], "env": {"clear": {"B": "2"}, "secret": ["S"]}}},
               secrets={"S": "x"})
    assert cfg.role_env("web").clear == {"A": "1", "B": "2"}
    assert cfg.role_env("web").secret == ("S",)


@pytest.mark.parametrize("over, path, message", [
    ({"servers": {"web": {"hosts": ["10.0.0.1", "bad host!"]}}}, "servers.web.hosts[1]",
     "'bad host!' is not a host name or IP address"),
    ({"servers": {"web": {"hosts": ["h", "h"]}}}, "servers.web.hosts", "a host is listed twice"),
    ({"servers": {"web": {"hosts": []}}}, "servers.web.hosts", "at least 1 item"),
    ({"servers": {"web": {"hosts": ["h"], "ports": ["80", "x:80"]}}}, "servers.web.ports[1]", "not a port mapping"),
    ({"servers": {"web": {"hosts": ["h"], "ports": ["70000:80"]}}}, "servers.web.ports[0]", "between 1 and 65535"),
    ({"servers": {"web": {"hosts": ["h"], "volumes": ["data"]}}}, "servers.web.volumes[0]", "is not a volume"),
    ({"servers": {"web": {"hosts": ["h"], "labels": {"destination": "x"}}}}, "servers.web.labels",
     "destination is set by the deployer"),
    ({"servers": {"web": {"hosts": ["h"], "restart": "sometimes"}}}, "servers.web.restart",
     "'sometimes' is not allowed here: use 'no', 'always', 'unless-stopped' or 'on-failure'"),
    ({"servers": {"web": {"hosts": ["h"], "colour": "red"}}}, "servers.web.colour",
     "unknown key: known keys are asset_path, cmd, env, hosts, labels,"),
    ({"servers": {"web": {"hots": ["h"]}}}, "servers.web.hots", "unknown key (did you mean hosts?): known keys are"),
    ({"proxy": {"healthcheck": {"pth": "/up"}}}, "proxy.healthcheck.pth",
     "unknown key (did you mean path?): known keys are interval, path, timeout"),
    ({"servers": {"Web!": {"hosts": ["h"]}}}, "servers.Web!", "not allowed here"),
    ({"ssh": {"port": 0}}, "ssh.port", "greater than or equal to 1"),
    ({"ssh": {"host_key_policy": "yolo"}}, "ssh.host_key_policy", "'strict' or 'accept-new'"),
    ({"registry": {"server": "r:5000", "username": "u"}}, "registry", "give both username and password"),
    ({"registry": {"server": "r:5000", "username": "u", "password": ""}}, "registry", "password is empty: set it"),
    ({"env": {"secret": ["DB_PASSWORD"]}}, "env.secret[0]",
     "pulumi config set --secret --path 'shipyard:secrets.DB_PASSWORD'"),
    ({"env": {"clear": {"1BAD": "x"}}}, "env.clear", "not a valid environment variable name"),
    ({"image": "Acme/Hello"}, "image", "not allowed here"),
    ({"service": "x" * 41}, "service", "not allowed here"),
    ({"version": "no spaces"}, "version", "not allowed here"),
    ({"sevrice": "hello"}, "sevrice", "unknown key (did you mean service?): known keys are accessories, aliases,"),
    ({"builder": {"host": "@@"}}, "builder.host", "not a host name"),
    ({"servers": {}}, "servers", "give at least one role with hosts, or an accessory"),
    ({"servers": {}, "accessories": {"db": {"image": "postgres:16", "host": "h"}},
      "promote": {"from_stack": "staging"}}, "promote", "an app of accessories only has no image to promote"),
    ({"ssh": {"proxy": "bastion", "proxy_command": "ssh -W %h:%p bastion"}}, "ssh", "not both"),
    ({"ssh": {"proxy": "root@bad host"}}, "ssh.proxy", "a jump host as [user@]host[:port]"),
])
def test_each_bad_value_names_its_path(over, path, message):
    with pytest.raises(ConfigError) as err:
        load(**over)
    assert err.value.path == path
    assert message in err.value.message
    assert str(err.value).startswith(f"{path}: ")


def test_a_missing_required_key():
    with pytest.raises(ConfigError, match=r"^image: required, but not set$"):
        config.load({"service": "x", "servers": ["h"]}, stack="s")


def test_ports_parse():
    p = config.Port.parse
    assert p("80") == config.Port(host_ip=None, host_port=None, container_port=80, protocol="tcp")
    assert p("8080:80") == config.Port(host_ip=None, host_port=8080, container_port=80, protocol="tcp")
    assert p("127.0.0.1:53:53/udp") == config.Port(host_ip="127.0.0.1", host_port=53, container_port=53,
                                                   protocol="udp")


def test_config_is_frozen():
    cfg = load()
    with pytest.raises(Exception):
        cfg.service = "other"


def test_proxy_config():
    cfg = load(proxy={"hosts": ["shop.example.com"]})
    assert cfg.role_proxy("web").hosts == ("shop.example.com",)
    assert cfg.role_proxy("web").healthcheck.path == "/up" and cfg.role_proxy("web").app_port == 80
    with pytest.raises(ConfigError, match=r"^servers.web.ports\[0\]: host port 80 belongs to the proxy"):
        load(proxy={"hosts": ["a.test"]}, servers={"web": {"hosts": ["h"], "ports": ["80:80"]}})
    with pytest.raises(ConfigError, match=r"^proxy: ssl needs at least one host name"):
        load(proxy={"ssl": True})
    # several path prefixes, each routed; one in a list is that one (as a route recorded before reads it)
    assert load(proxy={"path_prefix": ["/api", "/admin"]}).role_proxy("web").path_prefixes == ("/api", "/admin")
    assert load(proxy={"path_prefix": ["/api"]}).role_proxy("web").path_prefix == "/api"
    with pytest.raises(ConfigError, match=r"^proxy.path_prefix: a path prefix is listed twice"):
        load(proxy={"path_prefix": ["/api", "/api"]})
    with pytest.raises(ConfigError, match=r"^proxy.healthcheck.path: "):
        load(proxy={"healthcheck": {"path": "up"}})
    with pytest.raises(ConfigError, match=r"^retain_containers: "):
        load(retain_containers=0)


def test_accessory_config():
    cfg = load(accessories={"db": {"image": "postgres:16", "host": "10.0.0.2", "port": "127.0.0.1:5432:5432",
                                   "env": {"secret": ["PGPASSWORD"]}, "volumes": ["pgdata:/var/lib/postgresql"],
                                   "files": ["db/init.sql:/docker-entrypoint-initdb.d/init.sql"],
                                   "directories": ["backups:/backups"]}},
               secrets={"PGPASSWORD": "x"})
    db = cfg.accessories["db"]
    assert db.all_hosts() == ("10.0.0.2",) and db.container_port() == 5432
    with pytest.raises(ConfigError, match=r"^accessories.db: give host or hosts$"):
        load(accessories={"db": {"image": "postgres:16"}})
    with pytest.raises(ConfigError, match=r"^accessories.db.env.secret\[0\]: secret PGPASSWORD has no value"):
        load(accessories={"db": {"image": "postgres:16", "host": "h", "env": {"secret": ["PGPASSWORD"]}}})
    with pytest.raises(ConfigError, match=r"^accessories.db.directories\[0\]: '/abs:/x' is not a directory mapping"):
        load(accessories={"db": {"image": "postgres:16", "host": "h", "directories": ["/abs:/x"]}})
    with pytest.raises(ConfigError, match=r"^accessories.db.files\[0\]: 'nocolon' is not a file mapping"):
        load(accessories={"db": {"image": "postgres:16", "host": "h", "files": ["nocolon"]}})


def test_ssh_key_data_names_secrets_that_must_have_a_value():
    assert load(ssh={"key_data": ["DEPLOY_KEY"]}, secrets={"DEPLOY_KEY": "pem"}).ssh.key_data == ("DEPLOY_KEY",)
    with pytest.raises(ConfigError, match=r"^ssh.key_data\[0\]: secret DEPLOY_KEY has no value: run `pulumi config "
                                          r"set --secret --path 'shipyard:secrets.DEPLOY_KEY' < private-key-file`$"):
        load(ssh={"key_data": ["DEPLOY_KEY"]})


def test_a_missing_secret_says_how_to_set_it_for_this_stack(tmp_path):
    """A project has a stack per destination: the `pulumi config set` the error gives is for the stack being read."""
    from components import kamal
    with pytest.raises(ConfigError) as missing:
        kamal.load_stack({"service": "hello", "image": "acme/hello", "servers": {"web": {"hosts": ["h"]}},
                          "env": {"secret": ["DB_PASSWORD"]}}, stack="production", project_dir=tmp_path, environ={})
    assert str(missing.value) == ("env.secret[0]: secret DB_PASSWORD has no value: run `pulumi config set --stack "
                                  "production --secret --path 'shipyard:secrets.DB_PASSWORD' VALUE`")


@pytest.mark.parametrize("raw, message", [
    ({"servers": {"web": {"hosts": "h1"}}}, "servers.web.hosts: 'h1' is not allowed here: use a list, such as [a, b]"),
    ({"ssh": {"port": "x"}}, "ssh.port: 'x' is not allowed here: use a whole number"),
    ({"env": ["A"]}, "env: ['A'] is not allowed here: use a mapping of its keys (key: value)"),
    ({"proxy": {"ssl": "maybe"}}, "proxy.ssl: 'maybe' is not allowed here: use true or false"),
    # a secret set as a number (`pulumi config set --type int`, or written so in the file) is never shown
    ({"secrets": {"DB_PIN": 482913}}, "secrets.DB_PIN: this value is not allowed here: use a string"),
    ({"registry": {"server": "r:5000", "username": "u", "password": 98765}},
     "registry.password: this value is not allowed here: use a string"),
])
def test_a_value_of_the_wrong_kind_is_named_in_yaml_words(raw, message):
    with pytest.raises(ConfigError) as wrong:
        config.load({"service": "hello", "image": "acme/hello", "servers": {"web": {"hosts": ["h1"]}}, **raw},
                    stack="staging")
    assert str(wrong.value) == message
