from components import naming


def test_names_and_tags_carry_the_destination():
    repo = naming.image_repository("acme/hello", "registry.example.com:5000")
    assert repo == "registry.example.com:5000/acme/hello"
    assert naming.image_repository("acme/hello", None) == "acme/hello"
    assert naming.image_tag(repo, "abc123", "staging") == "registry.example.com:5000/acme/hello:abc123-staging"
    assert naming.image_tag(repo, "abc123", "staging") != naming.image_tag(repo, "abc123", "production")
    assert naming.container_name("hello", "web", "staging", "abc123") == "hello-web-staging-abc123"
    assert naming.network_name("hello", "staging") == "hello-staging"
    assert naming.accessory_name("hello", "staging", "db") == "hello-staging-db"
    assert naming.replaced_name("hello-web-staging-abc", "0123456789abcdef") == "hello-web-staging-abc_replaced_0123456789ab"


def test_labels_and_ownership():
    owner = naming.owner("shipyard", "staging")
    labels = naming.container_labels("hello", "web", "staging", "abc", owner)
    assert labels == {"service": "hello", "role": "web", "destination": "staging", "version": "abc",
                      "shipyard.stack": "shipyard/staging"}
    assert naming.owned_by(labels, owner, "staging")
    assert not naming.owned_by(labels, owner, "production")
    assert not naming.owned_by(labels, naming.owner("shipyard", "production"), "staging")
    assert not naming.owned_by({"destination": "staging"}, owner, "staging")
    assert not naming.owned_by(None, owner, "staging")
    assert naming.describe_owner(labels) == "stack shipyard/staging (destination staging)"


def test_ownership_survives_a_move_to_another_backend():
    """Labels written with a Pulumi organization (earlier releases, or another backend) still name the stack."""
    owner = naming.owner("shipyard", "staging")
    for written in ("organization/shipyard/staging", "acme-corp/shipyard/staging", "shipyard/staging"):
        assert naming.owned_by({"shipyard.stack": written, "destination": "staging"}, owner, "staging")
        assert naming.owned_by({"shipyard.stack": owner, "destination": "staging"}, written, "staging")
    assert not naming.owned_by({"shipyard.stack": "organization/other/staging", "destination": "staging"}, owner,
                               "staging")
    assert naming.describe_owner({"destination": "x"}) == "destination x of another deployer"
    assert naming.describe_owner({"destination": ""}) == "another deployer (without a destination)"
    assert naming.proxy_service("shop", "web", "staging") == "shop-web-staging"
    assert naming.proxy_service("shop", "web", None) == "shop-web"  # Kamal's route name without a destination
    assert naming.describe_owner({}) == "something not managed by this project"
