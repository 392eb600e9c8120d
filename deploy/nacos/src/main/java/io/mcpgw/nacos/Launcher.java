package io.mcpgw.nacos;

import com.alibaba.nacos.NacosServerBasicApplication;
import com.alibaba.nacos.NacosServerWebApplication;
import com.alibaba.nacos.console.NacosConsole;
import com.alibaba.nacos.core.listener.startup.NacosStartUp;
import com.alibaba.nacos.core.listener.startup.NacosStartUpManager;
import com.alibaba.nacos.sys.env.DeploymentType;
import com.alibaba.nacos.sys.env.EnvUtil;
import org.springframework.boot.WebApplicationType;
import org.springframework.boot.builder.SpringApplicationBuilder;
import org.springframework.context.ConfigurableApplicationContext;

/**
 * Starts Nacos the way its distribution does in the "merged" deployment: a core context without
 * a web server (persistence, consistency, config and naming services), then two children of it,
 * the server web context (the HTTP API on nacos.server.main.port and the client gRPC port, main
 * port + 1000) and the console context (nacos.console.port).  The children share the core's beans,
 * so the API and the console see the same data.  The upstream bootstrap module that does this is
 * not published to Maven Central, hence this class.
 *
 * <p>Settings come from application.properties on the class path and are overridden by the
 * --key=value arguments run.sh passes (ports, auth secrets).  A single line "mcpgw-nacos: started"
 * on standard output says every context is up; run.sh waits for the HTTP API itself.
 */
public final class Launcher {

    private Launcher() {
    }

    public static void main(String[] args) {
        System.setProperty("nacos.standalone", "true");
        System.setProperty("nacos.deployment.type", "merged");
        EnvUtil.setDeploymentType(DeploymentType.MERGED);

        // Nacos' run listeners ask the start-up manager which phase is starting (working
        // directories, the properties each phase reads, its log lines): announce each one.
        NacosStartUpManager.start(NacosStartUp.CORE_START_UP_PHASE);
        ConfigurableApplicationContext core = new SpringApplicationBuilder(NacosServerBasicApplication.class)
                .web(WebApplicationType.NONE)
                .run(args);
        NacosStartUpManager.start(NacosStartUp.WEB_START_UP_PHASE);
        new SpringApplicationBuilder(NacosServerWebApplication.class).parent(core).run(args);
        // The 3.1 console needs beans of the AI module (its A2A and MCP pages) whatever it is told, so a
        // Nacos with the AI module off runs without a console; failing there would also stop the server.
        if (core.getEnvironment().getProperty("nacos.extension.ai.enabled", Boolean.class, true)) {
            NacosStartUpManager.start(NacosStartUp.CONSOLE_START_UP_PHASE);
            new SpringApplicationBuilder(NacosConsole.class).parent(core).run(args);
        }
        System.out.println("mcpgw-nacos: started");
        System.out.flush();
    }
}
