# The oracle of tests/kamal_peer.py: loaded into the real Kamal (`RUBYOPT=-r<this file> kamal version`) before its
# command runs. For each app in the JSON list SHIPYARD_ORACLE_CONFIGS ([{dir, config, destination}]) it resolves the
# config with Kamal's own configuration classes, in that app directory, and prints one JSON line: what Kamal would
# deploy, or {"refused": <Kamal's error>}. Then it exits, so Kamal's own command never runs.
require "json"
require "kamal"

def seconds(value)
  value.nil? ? nil : value.to_f
end

def env_of(env, secrets)
  secret = env.secret_keys.map(&:to_s).to_h do |key|
    name, from = key.split(":", 2)
    [ name, secrets[from || name].to_s ]
  end
  { "clear" => env.clear.to_h { |k, v| [ k.to_s, v.to_s ] }, "secret" => secret }
end

def proxy_of(proxy)
  conf = proxy.proxy_config
  health = conf["healthcheck"] || {}
  { "hosts" => proxy.hosts, "app_port" => proxy.app_port, "ssl" => proxy.ssl? ? true : false,
    "path_prefixes" => proxy.path_prefixes, "healthcheck_path" => health["path"] || "/up",
    "healthcheck_interval" => seconds(health["interval"]), "healthcheck_timeout" => seconds(health["timeout"]),
    "response_timeout" => seconds(conf["response_timeout"]),
    "certificate" => proxy.certificate_pem_content, "private_key" => proxy.private_key_pem_content }
end

# A value as Kamal escaped it for the host's shell (a dumped string), read back
def unshell(value)
  value.gsub("\\`", "`").gsub("\\$", "$").undump
end

# `--log-driver "d" --log-opt k="v"` as {driver, options}
def logging_of(args)
  args.each_slice(2).each_with_object({ "driver" => nil, "options" => {} }) do |(flag, value), out|
    if flag == "--log-driver"
      out["driver"] = unshell(value)
    else
      key, val = value.split("=", 2)
      out["options"][key] = unshell(val)
    end
  end
end

# `--flag "value" --flag2 --flag "v2"` as {flag => value, or [values] when repeated, or true}
def options_of(args)
  out = {}
  args.each_with_index do |arg, i|
    next unless arg.start_with?("--")
    value = args[i + 1]&.start_with?('"') ? unshell(args[i + 1]) : true
    key = arg.delete_prefix("--")
    out[key] = out.key?(key) ? Array(out[key]) + [ value ] : value
  end
  out
end

# The variables Kamal's `docker run` of a container sets (`--env NAME="value"`), as written for the host's shell
# (`${...}` still to be expanded there); a bare `--env NAME` leaves NAME unset, so it is not listed
def run_env(command)
  args = command.flatten.map(&:to_s)
  args.each_cons(2).select { |flag, pair| flag == "--env" && pair.include?("=") }.to_h do |_, pair|
    key, value = pair.split("=", 2)
    [ key, value.gsub("\\`", "`").gsub("\\$", "$").undump ]
  end
end

# How the host's kamal-proxy runs (proxy.run), nil where the config does not say
def proxy_run_of(run)
  return nil unless run
  { "image" => run.image, "http_port" => run.http_port, "https_port" => run.https_port, "publish" => run.publish?,
    "bind_ips" => Array(run.bind_ips), "log_max_size" => run.log_max_size, "metrics_port" => run.metrics_port,
    "debug" => run.debug? ? true : false, "options" => options_of(Array(run.options_args).map(&:to_s)) }
end

def resolve(config)
  defaults = %w[service role destination]
  roles = config.roles.to_h do |role|
    [ role.name, {
      "hosts" => role.hosts, "cmd" => role.cmd,
      "env" => role.hosts.to_h { |host| [ host, env_of(role.env(host), config.secrets) ] },
      "proxy" => role.running_proxy? ? proxy_of(role.proxy) : nil,
      "asset_path" => role.assets? ? role.asset_path : nil,
      "proxy_run" => role.running_proxy? ? proxy_run_of(config.proxy_run(role.hosts.first)) : nil,
      "deploy_args" => role.running_proxy? ? role.proxy.deploy_command_args(target: "TARGET").map(&:to_s) : nil,
      "labels" => role.labels.to_h { |k, v| [ k.to_s, v.to_s ] }.except(*defaults),
      "run_env" => role.hosts.to_h { |host| [ host, run_env(Kamal::Commands::App.new(config, role: role, host: host).run) ] },
      "logging" => logging_of(role.logging_args.map(&:to_s)), "options" => options_of(role.option_args.map(&:to_s))
    } ]
  end
  accessories = config.accessories.to_h do |acc|
    [ acc.name, {
      "image" => acc.image, "hosts" => acc.hosts, "port" => acc.port, "cmd" => acc.cmd,
      "service_name" => acc.service_name,
      "registry" => acc.registry && { "server" => acc.registry.server, "username" => acc.registry.username,
                                      "password" => acc.registry.password },
      "proxy" => acc.running_proxy? ? proxy_of(acc.proxy) : nil,
      "deploy_args" => acc.running_proxy? ? acc.proxy.deploy_command_args(target: "TARGET").map(&:to_s) : nil,
      "logging" => logging_of(config.logging_args.map(&:to_s)), "options" => options_of(acc.option_args.map(&:to_s)),
      "run_env" => acc.hosts.to_h { |host| [ host, run_env(Kamal::Commands::Accessory.new(config, name: acc.name).run(host: host)) ] },
      "env" => env_of(acc.env, config.secrets),
      "mounts" => acc.volume_args.each_slice(2).map { |_, volume| volume.split(":")[1] }
    } ]
  end
  builder = config.builder.builder_config
  {
    "service" => config.service, "image" => config.image, "primary_role" => config.primary_role_name,
    "registry" => { "server" => config.registry.server, "username" => config.registry.username,
                    "password" => config.registry.password },
    "roles" => roles, "accessories" => accessories,
    "builder" => { "arch" => builder["arch"], "context" => builder["context"] || ".",
                   "dockerfile" => builder["dockerfile"] || "Dockerfile", "target" => builder["target"],
                   "args" => (builder["args"] || {}).to_h { |k, v| [ k.to_s, v.to_s ] }, "remote" => builder["remote"],
                   "clean_clone" => builder["context"].nil? },
    "ssh" => { "user" => config.ssh.user, "port" => config.ssh.port, "proxy" => jump(config.ssh.proxy),
               "proxy_command" => config.ssh.proxy.respond_to?(:command_line_template) ?
                 config.ssh.proxy.command_line_template : nil, "keys_only" => config.ssh.options[:keys_only] || false,
               "config" => config.ssh.options[:config].nil? ? true : config.ssh.options[:config],
               "key_data" => config.ssh.key_data },
    "boot" => { "limit" => config.boot.limit, "wait" => config.boot.wait },
    "retain_containers" => config.retain_containers, "readiness_delay" => seconds(config.readiness_delay),
    "deploy_timeout" => seconds(config.deploy_timeout), "drain_timeout" => seconds(config.drain_timeout)
  }
end

# the jump host of ssh.proxy (Net::SSH's Proxy::Jump), as [user@]host[:port]
def jump(proxy)
  proxy.respond_to?(:jump_proxies) ? proxy.jump_proxies : nil
end

JSON.parse(ENV.fetch("SHIPYARD_ORACLE_CONFIGS")).each do |item|
  result = Dir.chdir(item["dir"]) do
    ENV.delete("KAMAL_DESTINATION")
    resolve Kamal::Configuration.create_from(config_file: Pathname.new(item["config"]),
                                             destination: item["destination"], version: "oracle")
  rescue StandardError => e
    { "refused" => "#{e.class}: #{e.message}" }
  end
  $stdout.puts JSON.generate(result)
end
$stdout.flush
exit! 0
