// nginx doing the proxy's job as plainly as it can: proxy_pass over keep-alive
// with a static Authorization header, one worker, no logging. The yardstick.
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { ProcessGroup } from './process-group.js'
import { startServer } from './processes.js'

export async function startNginx (port: number, upstreamPort: number, token: string): Promise<ProcessGroup> {
  const dir = mkdtempSync(join(tmpdir(), 'cmu-bench-nginx-'))
  const config = `
worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy; fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
  upstream adobe { server 127.0.0.1:${upstreamPort}; keepalive 64; }
  server {
    listen 127.0.0.1:${port};
    location /cmu/ {
      proxy_pass http://adobe;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer ${token}";
    }
    location = /ready { return 200 "ok"; }
  }
}
`
  writeFileSync(join(dir, 'nginx.conf'), config)
  // nginx says nothing when it is up: wait until it answers.
  return await startServer('nginx', ['-p', dir, '-c', join(dir, 'nginx.conf')], `http://127.0.0.1:${port}/ready`)
}
