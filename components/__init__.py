"""shipyard: Kamal-style deploys of containerised apps to Linux hosts over SSH, as Pulumi stacks."""
